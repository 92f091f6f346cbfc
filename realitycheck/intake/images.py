"""Turn untrusted bytes or paths into a valid RGB `PIL.Image`, or a clear `ImageError`.

Every image that reaches a model (CLI, dashboard, evaluation, training) comes through
`load_image`, so the rules live in one place: EXIF orientation, odd modes, animation,
size caps, truncation.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Caps that keep a hostile or accidental file from taking the machine down. `load_image` checks
# them itself and leaves Pillow's process-wide settings (MAX_IMAGE_PIXELS, LOAD_TRUNCATED_IMAGES)
# as the host program has them: Pillow's bomb warning is turned into a refusal per call, and a
# truncated file is refused unless the host itself asked Pillow to accept truncated data.
MAX_FILE_BYTES = 50_000_000  # 50 MB per image
MAX_PIXELS = 40_000_000  # 40 megapixels (checked from the header, before decoding)
MIN_SIDE_WARN = 32  # smaller than this: classified, but with a warning

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif"}

Source = Union[str, os.PathLike, bytes, bytearray, BinaryIO]


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message is safe to show a user."""


@dataclass
class LoadedImage:
    image: Image.Image  # RGB, orientation applied
    name: str
    format: str | None
    notes: list[str] = field(default_factory=list)  # things the user should know


def _describe(name: str) -> str:
    """A name safe to put in a one-line message: control characters (newlines) escaped."""
    name = str(name or "image")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _read_bytes(source: Source, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), name or "uploaded image"
    if hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        return data, name or getattr(source, "name", "uploaded image")
    path = Path(source)
    label = _describe(name or str(path))
    if not path.exists():
        raise ImageError(f"{label}: no such file")
    if path.is_dir():
        raise ImageError(f"{label}: is a folder, not an image")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{label}: file is {size / 1e6:.0f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
        with open(path, "rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1), label
    except PermissionError:
        raise ImageError(f"{label}: permission denied (cannot read the file)") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read the file ({exc.strerror or exc})") from None


def _sniff_non_image(data: bytes) -> str | None:
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "a PDF document"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "an SVG drawing (vector images are not supported; export it as PNG or JPEG)"
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (was a web page saved instead of the image?)"
    return None


def _is_heif(data: bytes) -> bool:
    return data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypavif", b"ftyphevc", b"ftypavis")


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(arr)
        if not finite.any():
            raise ValueError("image holds no finite pixel values")
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
        if mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        elif mode == "F" and lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        scaled = np.clip((np.nan_to_num(arr, nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1) * 255
        notes.append(f"converted {mode} ({'16-bit' if '16' in mode else 'high bit-depth'}) pixels to 8-bit")
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparent areas shown on white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("converted from CMYK")
    return img.convert("RGB") if mode != "RGB" else img


def load_image(source: Source, name: str | None = None, *, draft_size: int | None = None) -> LoadedImage:
    """Decode `source` (path, bytes or file object) into an RGB image, or raise `ImageError`.

    `draft_size` lets JPEG decoding skip resolution (Pillow's `draft`): a 4000-px photo decodes at
    >= draft_size px on its shorter side, several times faster. Only for pictures people look at
    (thumbnails): the model path never drafts, because a draft decode changes p_fake (by up to
    0.015 in a test) and every path must give one image one number.
    """
    data, label = _read_bytes(source, name)
    label = _describe(label)
    if len(data) == 0:
        raise ImageError(f"{label}: file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{label}: file is larger than {MAX_FILE_BYTES / 1e6:.0f} MB")
    kind = _sniff_non_image(data)
    if kind:
        raise ImageError(f"{label}: not a supported image: it is {kind}")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(
                    f"{label}: {w}x{h} pixels is too large ({w * h / 1e6:.0f} MP; the limit is "
                    f"{MAX_PIXELS / 1e6:.0f} MP) - downscale it first"
                )
            if w == 0 or h == 0:
                raise ImageError(f"{label}: image has no pixels ({w}x{h})")
            frames = getattr(img, "n_frames", 1)
            if getattr(img, "is_animated", False) and frames > 1:
                img.seek(0)
                notes.append(f"animated {fmt} with {frames} frames: the first frame was used")
            if draft_size and fmt == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img, notes)
    except ImageError:
        raise
    except UnidentifiedImageError:
        if _is_heif(data):
            raise ImageError(f"{label}: a HEIC/AVIF photo, which this installation cannot decode; "
                             "convert it to JPEG or PNG") from None
        raise ImageError(f"{label}: not an image Pillow can read (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{label}: refused as a possible decompression bomb (too many pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError) as exc:
        msg = str(exc) or type(exc).__name__
        if "too large" in msg.lower() and "chunk" in msg.lower():
            raise ImageError(f"{label}: refused: the image carries oversized metadata (a text chunk too large to read safely)") from None
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise ImageError(f"{label}: file is truncated or incomplete (the download may have been cut off)") from None
        raise ImageError(f"{label}: the image data is corrupt ({msg})") from None
    if min(img.size) < MIN_SIDE_WARN:
        notes.append(f"very small image ({img.size[0]}x{img.size[1]} px): the verdict is unreliable")
    return LoadedImage(image=img, name=label, format=fmt, notes=notes)


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
