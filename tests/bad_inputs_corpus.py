"""A corpus of bad, odd and good inputs, generated in code (no binary fixtures in the repository).

Every path into the model (Python API, CLI, dashboard upload) must turn each of these into either
a verdict or one clear line saying why not. `tests/test_bad_inputs.py` runs the corpus through the
API and the CLI; the dashboard tests import `corpus()` and feed the `data` of each file case to
the upload widget.

    from bad_inputs_corpus import corpus, upload_cases
    for case in upload_cases(tmp_path): ...   # cases that are bytes (what an upload can be)

Run this file to print the observed outcome table used in docs/reliability.md:

    OMP_NUM_THREADS=1 .venv/bin/python tests/bad_inputs_corpus.py
"""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageCms, ImageOps

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FACE = REPO_ROOT / "sample_images" / "grace_hopper.jpg"

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Case:
    """One input. `expect` is "ok" (a verdict) or "error" (a one-line reason containing `error_has`).

    kind: "file" (write `data` to `filename`), "dir" (a folder named `filename`), "missing"
    (nothing there), "unreadable" (written, then chmod 000; only meaningful when not root).
    `check_image` gets the RGB image `load_image` returned; `check_result` gets the prediction as
    a dict (`Prediction.to_dict()` or one entry of `realitycheck predict --json`).
    """

    name: str
    filename: str
    data: bytes | None
    expect: str  # "ok" | "error"
    error_has: str = ""  # case-insensitive substring of the expected error
    what: str = ""  # one line for the docs table
    kind: str = "file"
    check_image: Callable | None = field(default=None, repr=False)
    check_result: Callable | None = field(default=None, repr=False)
    path: Path | None = None  # set by corpus()

    @property
    def bytes(self) -> bytes | None:  # the name the brief for the app tests uses
        return self.data

    @property
    def skip_reason(self) -> str | None:
        if self.kind == "unreadable" and IS_ROOT:
            return "running as root: root can read a chmod 000 file"
        return None


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------

def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(w: int = 64, h: int = 48, mode: str = "RGB") -> Image.Image:
    """A smooth colour image (compresses well, decodes to something non-uniform)."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    rgb = np.stack([x, y, 255 - x], -1).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A palette PNG that *declares* width x height pixels but carries one tiny IDAT (~100 bytes).

    Decoding it would allocate width*height bytes; a loader must refuse from the header alone.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    plte = bytes([0, 0, 0, 255, 255, 255])
    idat = zlib.compress(b"\x00" * 64, 9)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"PLTE", plte)
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def png_with_bad_crc() -> bytes:
    data = bytearray(encode(gradient(), "PNG"))
    data[29] ^= 0xFF  # last byte of the IHDR CRC
    return bytes(data)


def png_zero_width() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 0, 16, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b""))
            + png_chunk(b"IEND", b""))


def png_text_bomb() -> bytes:
    """A valid small PNG with a zTXt chunk that inflates to 8 MB of zeros (compressed ~8 KB)."""
    good = encode(gradient(), "PNG")
    blob = zlib.compress(b"\x00" * (8 << 20), 9)
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + blob)
    return good[:33] + ztxt + good[33:]  # right after IHDR


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to claim width x height."""
    data = bytearray(encode(gradient(16, 16), "JPEG", quality=90))
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


def gif_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(gradient(16, 16).convert("P"), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)  # logical screen descriptor
    i = data.index(b"\x2c")  # image descriptor
    struct.pack_into("<HH", data, i + 5, width, height)
    return bytes(data)


def jpeg_with_app1(payload: bytes) -> bytes:
    good = encode(gradient(), "JPEG", quality=90)
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return good[:2] + seg + good[2:]


def isobmff_header(brand: bytes) -> bytes:
    """The start of a HEIC/AVIF file (ftyp box) followed by junk: what an iPhone upload looks like to a sniffer."""
    ftyp = struct.pack(">I", 24) + b"ftyp" + brand + b"\x00\x00\x00\x00" + brand + b"mif1"
    return ftyp + b"\x00" * 200


# Orientation -----------------------------------------------------------------------------------

_EXIF_METHOD = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_INVERSE = {Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90}

MARKED_SIZE = (64, 32)  # (width, height) as the photo should be displayed


def marked_image() -> Image.Image:
    """Grey, non-square, red block top-left and blue block bottom-right (as displayed)."""
    img = Image.new("RGB", MARKED_SIZE, (128, 128, 128))
    img.paste((255, 0, 0), (0, 0, 12, 12))
    img.paste((0, 0, 255), (MARKED_SIZE[0] - 12, MARKED_SIZE[1] - 12, MARKED_SIZE[0], MARKED_SIZE[1]))
    return img


def oriented_jpeg(orientation: int) -> bytes:
    """Store the marked image the way a camera would for this EXIF orientation."""
    method = _EXIF_METHOD[orientation]
    stored = marked_image().transpose(_INVERSE.get(method, method))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def _dominant(px) -> str:
    r, g, b = px[:3]
    if r > 180 and g < 90 and b < 90:
        return "red"
    if b > 180 and r < 90 and g < 90:
        return "blue"
    return "other"


def check_oriented(data: bytes):
    def check(img: Image.Image):
        assert img.size == MARKED_SIZE, f"size {img.size}, expected {MARKED_SIZE} after EXIF rotation"
        w, h = img.size
        assert _dominant(img.getpixel((3, 3))) == "red", "red marker is not top-left"
        assert _dominant(img.getpixel((w - 4, h - 4))) == "blue", "blue marker is not bottom-right"
        expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        assert np.array_equal(np.asarray(img), np.asarray(expected)), "differs from ImageOps.exif_transpose"
    return check


# Checks ------------------------------------------------------------------------------------------

def check_size(size):
    def check(img: Image.Image):
        assert img.mode == "RGB" and img.size == tuple(size), f"{img.mode} {img.size}, expected RGB {size}"
    return check


def check_pixel(xy, rgb, tol=6):
    def check(img: Image.Image):
        assert img.mode == "RGB"
        got = img.getpixel(xy)
        assert all(abs(a - b) <= tol for a, b in zip(got, rgb)), f"pixel {xy} is {got}, expected ~{rgb}"
    return check


def all_of(*checks):
    def check(x):
        for c in checks:
            c(x)
    return check


def note_has(text: str):
    def check(result: dict):
        assert any(text.lower() in n.lower() for n in result.get("notes") or []), \
            f"no note mentioning {text!r}: {result.get('notes')}"
    return check


def faces_at_least(n: int):
    def check(result: dict):
        assert result["faces"] is not None and result["faces"] >= n, f"faces={result['faces']}, expected >= {n}"
    return check


def faces_exactly(n: int, message: str = ""):
    def check(result: dict):
        assert result["faces"] == n, f"faces={result['faces']}, expected {n}"
        assert message.lower() in (result.get("face_message") or "").lower()
    return check


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _build() -> tuple[Case, ...]:
    rng = np.random.default_rng(1234)
    face = Image.open(SAMPLE_FACE).convert("RGB")
    face_jpg = SAMPLE_FACE.read_bytes()
    good_png = encode(gradient(), "PNG")
    good_jpg = encode(gradient(), "JPEG", quality=90)
    cases: list[Case] = []

    def add(name, filename, data, expect, error_has="", what="", **kw):
        cases.append(Case(name, filename, data, expect, error_has, what, **kw))

    # --- not images at all ------------------------------------------------------------------
    add("empty_file", "empty.jpg", b"", "error", "empty", "0-byte file named .jpg")
    add("random_bytes_jpg", "random.jpg", rng.bytes(4096), "error", "not an image", "4 KB of random bytes named .jpg")
    add("random_bytes_png", "random.png", rng.bytes(300), "error", "not an image", "random bytes named .png")
    add("text_as_png", "notes.png", b"hello, this is a text file\n" * 20, "error", "not an image", "plain text named .png")
    add("html_as_jpg", "photo.jpg", b"<!DOCTYPE html><html><head><title>Login</title></head><body>Sign in</body></html>",
        "error", "HTML", "HTML page saved as .jpg (failed download)")
    add("html_lowercase", "page.png", b"  \n<html><body><img src='x.jpg'></body></html>", "error", "HTML",
        "HTML without doctype, leading whitespace")
    add("pdf", "scan.pdf", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n", "error", "PDF", "a PDF document")
    add("pdf_as_jpg", "scan.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + rng.bytes(200), "error", "PDF", "a PDF named .jpg")
    add("svg", "logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>',
        "error", "SVG", "an SVG drawing")
    add("svg_xml_decl_as_png", "logo.png",
        b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "error", "SVG",
        "SVG with XML declaration named .png")
    add("heic_header", "IMG_0001.heic", isobmff_header(b"heic"), "error", "HEIC", "iPhone HEIC header")
    add("avif_header_junk", "photo.avif", isobmff_header(b"avif"), "error", "AVIF", "AVIF header followed by junk")
    add("zip_as_jpg", "archive.jpg", b"PK\x03\x04" + rng.bytes(200), "error", "not an image", "zip data named .jpg")
    add("elf_as_png", "program.png", b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "error", "not an image", "an executable named .png")
    add("jpeg_soi_eoi_only", "stub.jpg", b"\xff\xd8\xff\xd9", "error", "not an image", "JPEG start+end markers, nothing else")

    # --- damaged images -----------------------------------------------------------------------
    add("truncated_jpeg", "truncated.jpg", face_jpg[: len(face_jpg) // 2], "error", "truncated", "half of a real JPEG")
    add("truncated_jpeg_header", "header_only.jpg", face_jpg[:200], "error", "truncated", "first 200 bytes of a JPEG")
    add("truncated_png", "truncated.png", good_png[: len(good_png) // 2], "error", "truncated", "half of a PNG")
    add("truncated_gif", "truncated.gif", encode(gradient().convert("P"), "GIF")[:400], "error", "not an image",
        "first 400 bytes of a GIF")
    add("png_bad_crc", "badcrc.png", png_with_bad_crc(), "error", "not an image", "PNG whose IHDR checksum is wrong")
    add("png_zero_width", "zerowidth.png", png_zero_width(), "error", "not an image", "PNG header declaring 0 x 16 pixels")

    # --- decompression bombs (headers only: the tests never allocate the pixels) --------------------
    add("bomb_png_900mp", "bomb.png", png_bomb(30000, 30000), "error", "bomb",
        "palette PNG declaring 30000x30000 (900 MP), 100-byte IDAT")
    add("bomb_png_100mp", "bomb100.png", png_bomb(10000, 10000), "error", "bomb",
        "PNG declaring 10000x10000 (over Pillow's warning limit)")
    add("big_png_50mp", "big50.png", png_bomb(10000, 5000), "error", "too large",
        "PNG declaring 10000x5000 (50 MP, over RealityCheck's 40 MP cap)")
    add("bomb_jpeg_header", "bomb.jpg", jpeg_with_size(65000, 65000), "error", "bomb", "JPEG whose SOF claims 65000x65000")
    add("bomb_gif_header", "bomb.gif", gif_with_size(65535, 65535), "error", "bomb", "GIF claiming 65535x65535")
    add("png_ztxt_bomb", "textbomb.png", png_text_bomb(), "error", "too large",
        "valid pixels plus a zTXt text chunk inflating to 8 MB (Pillow refuses text chunks over 1 MB)")

    # --- sizes --------------------------------------------------------------------------------
    add("tiny_1x1", "one_pixel.png", encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), "ok",
        what="1x1 pixel", check_image=check_size((1, 1)), check_result=note_has("very small"))
    add("tiny_8x8", "eight.jpg", encode(gradient(8, 8), "JPEG"), "ok", what="8x8 JPEG",
        check_image=check_size((8, 8)), check_result=note_has("very small"))
    add("strip_wide", "strip_wide.png", encode(gradient(10000, 100), "PNG"), "ok", what="10000x100 strip",
        check_image=check_size((10000, 100)))
    add("strip_tall", "strip_tall.jpg", encode(gradient(100, 10000), "JPEG", quality=80), "ok", what="100x10000 strip",
        check_image=check_size((100, 10000)))

    # --- modes --------------------------------------------------------------------------------
    add("gray_L", "gray.png", encode(gradient(mode="L"), "PNG"), "ok", what="grayscale (L)", check_image=check_size((64, 48)))
    la = Image.new("LA", (64, 48), (0, 0))
    la.paste((20, 255), (32, 0, 64, 48))
    add("gray_alpha_LA", "gray_alpha.png", encode(la, "PNG"), "ok", what="grayscale + alpha (LA), left half transparent",
        check_image=all_of(check_pixel((5, 5), (255, 255, 255)), check_pixel((50, 5), (20, 20, 20))),
        check_result=note_has("transparent"))
    pal = Image.new("P", (64, 48), 1)
    pal.putpalette([0, 0, 0, 200, 30, 30] + [0] * (254 * 3))
    pal.paste(0, (0, 0, 32, 48))
    add("palette_transparency", "palette.png", encode(pal, "PNG", transparency=0), "ok",
        what="palette (P) with tRNS transparency", check_image=all_of(check_pixel((5, 5), (255, 255, 255)),
                                                                     check_pixel((50, 5), (200, 30, 30))))
    add("palette_gif_transparency", "palette.gif", encode(pal, "GIF", transparency=0), "ok",
        what="GIF with a transparent colour", check_image=check_pixel((5, 5), (255, 255, 255)))
    rgba = gradient(mode="RGBA")
    rgba.putalpha(Image.new("L", (64, 48), 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 48))
    add("rgba", "rgba.png", encode(rgba, "PNG"), "ok", what="RGBA, left half fully transparent",
        check_image=check_pixel((5, 5), (255, 255, 255)), check_result=note_has("transparent"))
    add("bilevel_1", "bilevel.png", encode(gradient(mode="L").point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG"),
        "ok", what="1-bit black and white", check_image=check_size((64, 48)))
    add("cmyk_jpeg", "cmyk.jpg", encode(gradient(mode="CMYK"), "JPEG"), "ok", what="CMYK JPEG",
        check_image=check_size((64, 48)), check_result=note_has("CMYK"))
    ramp16 = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 65535 // (64 * 48 - 1)).astype(np.uint16)
    add("png_16bit", "deep.png", encode(Image.fromarray(ramp16), "PNG"), "ok", what="16-bit grayscale PNG (I;16)",
        check_image=all_of(check_pixel((0, 0), (0, 0, 0), 1), check_pixel((63, 47), (255, 255, 255), 1)),
        check_result=note_has("16-bit"))
    add("tiff_16bit_bigendian", "deep_be.tif", encode(Image.fromarray(ramp16.astype(">u2")), "TIFF"), "ok",
        what="16-bit big-endian TIFF (I;16B)", check_image=check_pixel((63, 47), (255, 255, 255), 1),
        check_result=note_has("16-bit"))
    int32 = (np.arange(64 * 48, dtype=np.int32).reshape(48, 64) * 1000 - 500_000)
    add("tiff_int32_I", "int32.tif", encode(Image.fromarray(int32), "TIFF"), "ok", what="32-bit integer TIFF (I)",
        check_image=all_of(check_pixel((0, 0), (0, 0, 0), 1), check_pixel((63, 47), (255, 255, 255), 1)))
    flt = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    add("tiff_float_F", "float.tif", encode(Image.fromarray(flt), "TIFF"), "ok", what="32-bit float TIFF (F), 0..1",
        check_image=check_pixel((63, 47), (255, 255, 255), 1))
    add("tiff_float_nan", "nan.tif", encode(Image.fromarray(np.full((48, 64), np.nan, np.float32)), "TIFF"), "error",
        "no finite pixel", "float TIFF whose pixels are all NaN")

    # --- animation, containers ------------------------------------------------------------------
    frames = [Image.new("RGB", (64, 48), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    add("animated_gif", "anim.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0),
        "ok", what="animated GIF, 3 frames", check_image=check_pixel((10, 10), (200, 0, 0), 20),
        check_result=note_has("first frame"))
    add("animated_webp", "anim.webp", encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80,
                                             lossless=True), "ok", what="animated WebP, 3 frames",
        check_image=check_pixel((10, 10), (200, 0, 0), 20), check_result=note_has("first frame"))
    add("animated_png", "anim.png", encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=80),
        "ok", what="animated PNG (APNG), 3 frames", check_image=check_pixel((10, 10), (200, 0, 0), 3),
        check_result=note_has("first frame"))
    add("multipage_tiff", "pages.tif", encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "ok",
        what="3-page TIFF", check_image=check_pixel((10, 10), (200, 0, 0), 1), check_result=note_has("first frame"))
    add("bmp", "plain.bmp", encode(gradient(), "BMP"), "ok", what="BMP", check_image=check_size((64, 48)))
    add("tiff", "plain.tif", encode(gradient(), "TIFF", compression="tiff_lzw"), "ok", what="LZW TIFF",
        check_image=check_size((64, 48)))
    add("webp", "plain.webp", encode(gradient(), "WEBP", quality=90), "ok", what="still WebP", check_image=check_size((64, 48)))
    add("jpeg_named_png", "really_a_jpeg.png", good_jpg, "ok", what="JPEG bytes with a .png name",
        check_image=check_size((64, 48)))
    add("uppercase_ext", "SHOUTING.JPG", good_jpg, "ok", what="upper-case extension", check_image=check_size((64, 48)))
    add("unicode_name", "фото лица 😀.jpeg", good_jpg, "ok", what="non-ASCII file name with spaces",
        check_image=check_size((64, 48)))
    add("progressive_jpeg", "progressive.jpg", encode(gradient(), "JPEG", progressive=True), "ok",
        what="progressive JPEG", check_image=check_size((64, 48)))

    # --- metadata -------------------------------------------------------------------------------
    for o in range(2, 9):
        data = oriented_jpeg(o)
        add(f"exif_orientation_{o}", f"orientation_{o}.jpg", data, "ok", what=f"EXIF orientation {o}",
            check_image=check_oriented(data))
    exif9 = Image.Exif()
    exif9[0x0112] = 9
    add("exif_orientation_invalid", "orientation_9.jpg", encode(gradient(), "JPEG", exif=exif9.tobytes()), "ok",
        what="EXIF orientation 9 (invalid value)", check_image=check_size((64, 48)))
    add("exif_corrupt", "badexif.jpg", jpeg_with_app1(b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 40), "ok",
        what="JPEG with a corrupt EXIF block", check_image=check_size((64, 48)))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    add("icc_profile", "icc.jpg", encode(gradient(), "JPEG", icc_profile=srgb), "ok", what="JPEG with an embedded ICC profile",
        check_image=check_size((64, 48)))

    # --- content: faces ----------------------------------------------------------------------------
    add("good_face", "grace_hopper.jpg", face_jpg, "ok", what="a real portrait (control)",
        check_image=check_size(face.size), check_result=faces_exactly(1))
    add("no_face_uniform", "uniform.png", encode(Image.new("RGB", (256, 256), (90, 140, 200)), "PNG"), "ok",
        what="uniform colour, no face", check_result=faces_exactly(0, "no face"))
    two = Image.new("RGB", (face.width * 2, face.height))
    two.paste(face, (0, 0))
    two.paste(face, (face.width, 0))
    add("two_faces", "two_faces.jpg", encode(two, "JPEG", quality=92), "ok", what="two portraits side by side",
        check_image=check_size(two.size), check_result=faces_at_least(2))
    rotated = face.rotate(90, expand=True)
    add("face_rotated_90", "rotated_face.jpg", encode(rotated, "JPEG", quality=92), "ok",
        what="portrait rotated 90 degrees (no EXIF)", check_image=check_size(rotated.size))

    # --- not a file ----------------------------------------------------------------------------------
    add("directory", "a_folder.jpg", None, "error", "folder", "a folder (named .jpg) passed as a file", kind="dir")
    add("missing_path", "does_not_exist.jpg", None, "error", "no such file", "a path that does not exist", kind="missing")
    add("unreadable", "locked.jpg", good_jpg, "error", "permission denied", "chmod 000 file (skipped as root)",
        kind="unreadable")
    return tuple(cases)


def case_names() -> list[str]:
    return [c.name for c in _build()]


def corpus(tmp_path: str | os.PathLike) -> list[Case]:
    """Write every case under `tmp_path` and return them with `path` set."""
    root = Path(tmp_path)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for case in _build():
        path = root / case.filename
        if case.kind == "dir":
            path.mkdir(exist_ok=True)
        elif case.kind in ("file", "unreadable"):
            path.write_bytes(case.data)
            if case.kind == "unreadable":
                path.chmod(0)
        out.append(replace(case, path=path))
    return out


def upload_cases(tmp_path: str | os.PathLike | None = None) -> list[Case]:
    """Only the cases that are bytes: what a browser upload can deliver (no folders or missing paths)."""
    cases = corpus(tmp_path) if tmp_path is not None else list(_build())
    return [c for c in cases if c.kind == "file"]


# ---------------------------------------------------------------------------------------------
# The docs table: run the corpus through the API and the CLI and print what happened.
# ---------------------------------------------------------------------------------------------

def _outcome(result: dict | None, case: Case | None = None) -> str:
    if result is None:
        return "warning: folder holds no images (folders are expanded)" if case and case.kind == "dir" else "(no entry)"
    return "verdict" if not result.get("error") else "error"


def observe(tmp: Path, weights: Path) -> list[tuple[Case, dict | None, dict | None]]:
    import json
    import subprocess
    import sys

    from realitycheck.model.inference import Classifier

    cases = [c for c in corpus(tmp / "corpus") if not c.skip_reason]
    clf = Classifier.from_file(weights, precision="fp32")
    api = {str(c.path): p.to_dict() for c, p in zip(cases, clf.predict([str(c.path) for c in cases]))}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "realitycheck", "predict", *[str(c.path) for c in cases], "--json",
                           "--weights", str(weights), "--no-progress"], capture_output=True, text=True, env=env)
    cli = {d["path"]: d for d in json.loads(proc.stdout)}
    return [(c, api.get(str(c.path)), cli.get(str(c.path))) for c in cases]


def markdown_table(rows) -> str:
    lines = ["| case | input | API | CLI | message shown (API) |", "|---|---|---|---|---|"]
    for case, api, cli in rows:
        msg = (api or {}).get("error") or "; ".join((api or {}).get("notes") or []) or (api or {}).get("face_message", "")
        if api and api.get("error") and case.path:
            msg = msg.replace(str(case.path), case.filename)
        msg = msg.replace("|", "\\|")
        lines.append(f"| `{case.name}` | {case.what} | {_outcome(api)} | {_outcome(cli, case)} | {msg} |")
    for case in _build():
        if case.skip_reason:
            lines.append(f"| `{case.name}` | {case.what} | not run | not run | {case.skip_reason} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    import sys
    import tempfile

    sys.path.insert(0, str(REPO_ROOT))
    from tests.helpers import save_tiny_checkpoint

    with tempfile.TemporaryDirectory() as d:
        weights = save_tiny_checkpoint(Path(d) / "tiny.pt")
        print(markdown_table(observe(Path(d), weights)))
