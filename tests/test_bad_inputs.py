"""Bad, odd and hostile inputs end in a verdict or one clear line, through the API and the CLI.

The corpus (tests/bad_inputs_corpus.py) is generated in code. Each case goes through
  (a) `load_image` (path and bytes) and `Classifier.predict` on the whole corpus at once,
  (b) ONE `realitycheck predict ... --json` process for all files, plus single-file runs,
  (c) afterwards the same classifier must still give the same verdict on a good image.
Then: zip uploads (`realitycheck.intake.uploads`) against traversal, symlinks, bombs and lying headers.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image, features

from realitycheck.intake.images import MAX_FILE_BYTES, ImageError, load_image
from realitycheck.intake.uploads import (
    UploadError,
    check_upload_size,
    extract_labelled_zip,
)
from tests.bad_inputs_corpus import Case, case_names, corpus, encode, gradient
from tests.helpers import cli_command, cli_env, run_cli

NAMES = case_names()
# Pillow warns (and carries on) on the deliberately corrupt EXIF block; that is the behaviour under test.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    return {c.name: c for c in corpus(tmp_path_factory.mktemp("corpus"))}


assert len(NAMES) >= 40 and len(set(NAMES)) == len(NAMES), "the corpus lost cases or names clash"


def _skip_if_needed(case: Case):
    if case.skip_reason:
        pytest.skip(case.skip_reason)


def assert_clear_error(message: str, prefix: str, case: Case):
    """One line, starts with the file name, says what the case expects, no Python internals."""
    assert message, "empty error message"
    assert "\n" not in message.strip(), f"error spans several lines: {message!r}"
    assert message.startswith(prefix), f"error does not start with the file name {prefix!r}: {message!r}"
    assert "Traceback" not in message and 'File "' not in message
    # inference.prepare's catch-all: reaching it means load_image let an unexpected exception out
    assert "could not process the image" not in message, f"unexpected exception leaked: {message}"
    assert case.error_has.lower() in message.lower(), f"expected {case.error_has!r} in {message!r}"


# ---------------------------------------------------------------------------------------------
# (a) Python API
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_load_image_path(cases, name):
    case = cases[name]
    _skip_if_needed(case)
    if case.expect == "ok":
        loaded = load_image(case.path)
        assert loaded.image.mode == "RGB" and min(loaded.image.size) >= 1
        if case.check_image:
            case.check_image(loaded.image)
    else:
        with pytest.raises(ImageError) as err:
            load_image(case.path)
        assert_clear_error(str(err.value), str(case.path), case)


@pytest.mark.parametrize("name", NAMES)
def test_load_image_bytes(cases, name):
    """The upload path: bytes plus the browser-supplied file name."""
    case = cases[name]
    if case.kind != "file":
        pytest.skip("not something an upload can deliver")
    if case.expect == "ok":
        loaded = load_image(case.data, name=case.filename)
        if case.check_image:
            case.check_image(loaded.image)
    else:
        with pytest.raises(ImageError) as err:
            load_image(case.data, name=case.filename)
        assert_clear_error(str(err.value), case.filename, case)
    loaded_from_fileobj = None
    try:
        loaded_from_fileobj = load_image(io.BytesIO(case.data), name=case.filename)
    except ImageError:
        pass
    assert (loaded_from_fileobj is not None) == (case.expect == "ok")


@pytest.fixture(scope="module")
def reference(tiny_classifier, sample_face):
    """Verdict on a good image BEFORE the corpus, to compare with after it."""
    return tiny_classifier.predict_one(str(sample_face))


@pytest.fixture(scope="module")
def api_predictions(tiny_classifier, cases, reference):
    runnable = [c for c in cases.values() if not c.skip_reason]
    preds = tiny_classifier.predict([str(c.path) for c in runnable])
    assert len(preds) == len(runnable)
    return {c.name: p for c, p in zip(runnable, preds)}


@pytest.mark.parametrize("name", NAMES)
def test_classifier_predict(cases, api_predictions, name):
    case = cases[name]
    _skip_if_needed(case)
    pred = api_predictions[name]
    assert pred.name == str(case.path)
    if case.expect == "ok":
        assert pred.ok, pred.error
        assert pred.label in ("real", "fake")
        assert math.isfinite(pred.p_fake) and 0.0 <= pred.p_fake <= 1.0
        assert abs(pred.p_fake + pred.p_real - 1.0) < 1e-6
        if case.check_result:
            case.check_result(pred.to_dict())
    else:
        assert not pred.ok and pred.label is None and pred.p_fake is None
        assert_clear_error(pred.error, str(case.path), case)


def test_classifier_unchanged_after_corpus(tiny_classifier, api_predictions, reference, sample_face):
    """(c) Nothing in the corpus leaves the shared classifier in a bad state."""
    again = tiny_classifier.predict_one(str(sample_face))
    assert again.ok and again.label == reference.label
    assert again.p_fake == pytest.approx(reference.p_fake, abs=1e-6)
    assert again.faces == reference.faces == 1


# ---------------------------------------------------------------------------------------------
# (b) CLI: one process for the whole corpus
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_corpus(cases, tiny_checkpoint):
    runnable = [c for c in cases.values() if not c.skip_reason]
    proc = run_cli("predict", *[str(c.path) for c in runnable], "--json", "--weights", str(tiny_checkpoint),
                   "--no-progress")
    assert proc.stdout.strip(), f"no JSON on stdout; stderr: {proc.stderr[-2000:]}"
    entries = json.loads(proc.stdout)
    return proc, {e["path"]: e for e in entries}


def test_cli_corpus_exit_code_and_stderr(cli_corpus, cases):
    proc, entries = cli_corpus
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    failed = sum(1 for e in entries.values() if e["error"])
    assert f"{failed} of {len(entries)} inputs failed" in proc.stderr
    # every stderr line is a RealityCheck message or a known library warning, never a stack
    for line in proc.stderr.splitlines():
        assert not line.startswith(("  File ", "Traceback")), line


@pytest.mark.parametrize("name", NAMES)
def test_cli_predict(cases, cli_corpus, api_predictions, name):
    case = cases[name]
    _skip_if_needed(case)
    proc, entries = cli_corpus
    if case.kind == "dir":
        # the CLI expands folders; an empty one is a warning, not a result
        assert str(case.path) not in entries
        assert f"{case.path}: folder holds no images" in proc.stderr
        return
    entry = entries[str(case.path)]
    if case.expect == "ok":
        assert entry["error"] is None and entry["label"] in ("real", "fake")
        assert 0.0 <= entry["p_fake"] <= 1.0
        if case.check_result:
            case.check_result(entry)
    else:
        assert entry["label"] is None and entry["p_fake"] is None
        assert_clear_error(entry["error"], str(case.path), case)
        assert entry["error"] == api_predictions[name].error  # the same message on every path


def _run_parallel(*argvs):
    procs = [subprocess.Popen(cli_command(*a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env()) for a in argvs]
    return [(p, *p.communicate(timeout=300)) for p in procs]


def test_cli_single_bad_and_good_file(cases, tiny_checkpoint, sample_face, tmp_path):
    bad = cases["truncated_jpeg"].path
    (tmp_path / "empty").mkdir()
    (pb, out_b, err_b), (pg, out_g, err_g), (pe, out_e, err_e) = _run_parallel(
        ["predict", bad, "--weights", tiny_checkpoint],
        ["predict", sample_face, "--json", "--weights", tiny_checkpoint],
        ["predict", tmp_path / "empty", "--weights", tiny_checkpoint],
    )
    # one bad file: exit 1, one line naming it, no traceback
    assert pb.returncode == 1 and "Traceback" not in err_b
    line = out_b.strip()
    assert "\n" not in line and line.startswith(f"{bad}\tERROR\tfile is truncated")  # the path once
    assert "1 of 1 inputs failed" in err_b
    # one good file: exit 0 and a verdict
    assert pg.returncode == 0 and "Traceback" not in err_g, err_g
    [good] = json.loads(out_g)
    assert good["error"] is None and good["label"] in ("real", "fake") and good["faces"] == 1
    # nothing to predict at all: a usage error (2)
    assert pe.returncode == 2 and "Traceback" not in err_e and "no images to predict" in err_e


# ---------------------------------------------------------------------------------------------
# More edge cases that do not fit the byte corpus
# ---------------------------------------------------------------------------------------------

def test_importing_the_package_leaves_pillow_settings_alone():
    """Pillow's limits are process-wide: the host program's choice, not ours to change on import."""
    code = ("from PIL import Image, ImageFile; before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES); "
            "import realitycheck.intake.images, realitycheck.intake.uploads; "
            "assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before, before")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_own_pixel_cap_holds_when_the_host_switches_pillows_off():
    from tests.bad_inputs_corpus import png_bomb

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the host disabled Pillow's decompression-bomb check
    try:
        with pytest.raises(ImageError, match="100 MP; the limit is 40 MP"):
            load_image(png_bomb(10000, 10000), "bomb.png")
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_file_over_size_cap_is_refused_before_reading(tmp_path):
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as fh:  # sparse: no real disk or memory used
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ImageError, match=r"huge\.jpg: file is \d+ MB; the limit is \d+ MB"):
        load_image(big)


def test_error_is_one_line_even_when_the_name_has_a_newline(tmp_path, tiny_classifier):
    """A hostile file name must not be able to forge extra output lines (CLI text mode, logs)."""
    path = tmp_path / "evil\nfake.jpg\treal\tp_fake=0.000.jpg"
    path.write_bytes(b"not an image")
    pred = tiny_classifier.predict_one(str(path))
    assert not pred.ok
    assert "\n" not in pred.error, f"error spans several lines: {pred.error!r}"


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")
def test_decodable_avif_is_not_called_undecodable():
    """Pillow here decodes AVIF; refusing it as 'this installation cannot decode' is not true."""
    data = encode(gradient(), "AVIF")
    assert Image.open(io.BytesIO(data)).size == (64, 48)  # Pillow can read it
    try:
        loaded = load_image(data, name="photo.avif")
    except ImageError as exc:
        assert "cannot decode" not in str(exc), f"misleading message: {exc}"
    else:
        assert loaded.image.size == (64, 48)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read a chmod 000 file")
def test_unreadable_file_message(tmp_path):
    p = tmp_path / "locked.png"
    p.write_bytes(encode(gradient(), "PNG"))
    p.chmod(0)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            load_image(p)
    finally:
        p.chmod(0o600)


# ---------------------------------------------------------------------------------------------
# Zip uploads
# ---------------------------------------------------------------------------------------------

PNG = encode(gradient(32, 32), "PNG")
JPG = encode(gradient(32, 32), "JPEG")


def make_zip(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, b"")
            else:
                zf.writestr(name, data)
    return buf.getvalue()


def labelled_members(prefix: str = "", n: int = 3) -> dict[str, bytes]:
    m = {}
    for i in range(n):
        m[f"{prefix}real/r{i}.png"] = PNG
        m[f"{prefix}fake/f{i}.jpg"] = JPG
    return m


def patch_headers(data: bytes, name: str, *, file_size: int | None = None, flag_bits: int | None = None) -> bytes:
    """Rewrite the local and central headers of one member (what a hostile zip tool could do)."""
    out = bytearray(data)
    enc = name.encode()
    # (signature, offset of the name length, of the name, of the uncompressed size, of the flag bits)
    for sig, n_at, name_at, size_at, flags_at in ((b"PK\x03\x04", 26, 30, 22, 6),   # local file headers
                                                  (b"PK\x01\x02", 28, 46, 24, 8)):  # central directory
        i = 0
        while (i := out.find(sig, i)) != -1:
            n_len = struct.unpack_from("<H", out, i + n_at)[0]
            if bytes(out[i + name_at:i + name_at + n_len]) == enc:
                if file_size is not None:
                    struct.pack_into("<I", out, i + size_at, file_size)
                if flag_bits is not None:
                    struct.pack_into("<H", out, i + flags_at, flag_bits)
            i += 4
    return bytes(out)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_zip_good_flat(tmp_path):
    root, messages = extract_labelled_zip(make_zip(labelled_members()), tmp_path)
    from realitycheck.intake.data import discover

    items = list(discover(root))
    assert len(items) == 6 and {lab for _, lab in items} == {"real", "fake"}
    assert messages == []
    assert root.parent == tmp_path  # a fresh folder inside dest_dir


def test_zip_single_top_folder_and_nested_and_junk(tmp_path):
    members = labelled_members("My Faces/set1/")
    members["My Faces/set1/real/notes.txt"] = b"hi"
    members["My Faces/set1/fake/run.exe"] = b"MZ"
    members["__MACOSX/My Faces/._r0.png"] = b"junk"
    members["My Faces/.DS_Store"] = b"junk"
    root, messages = extract_labelled_zip(make_zip(members), tmp_path)
    assert root.name == "set1" and root.parent.name == "My Faces"
    assert len(messages) == 2 and all("skipped (not an image file" in m for m in messages)
    assert any(m.startswith("My Faces/set1/real/notes.txt") for m in messages)
    assert not any(p.endswith((".txt", ".exe")) for p in tree(root))


@pytest.mark.parametrize("evil", ["../evil.png", "real/../../evil.png", "/tmp/evil.png", "..\\evil.png",
                                  "C:/Windows/evil.png", "real/..\\..\\evil.png"])
def test_zip_path_traversal_refused(tmp_path, evil):
    dest = tmp_path / "dest"
    members = labelled_members()
    members[evil] = PNG
    with pytest.raises(UploadError, match="refused"):
        extract_labelled_zip(make_zip(members), dest)
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()
    assert not dest.exists() or tree(dest) == []


def test_zip_symlink_member_refused(tmp_path):
    link = zipfile.ZipInfo("real/passwd.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in labelled_members().items():
            zf.writestr(name, data)
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UploadError, match="symbolic link"):
        extract_labelled_zip(buf.getvalue(), tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or tree(tmp_path / "dest") == []


def test_zip_bomb_member_ratio_refused(tmp_path):
    members = labelled_members()
    members["real/bomb.bmp"] = b"\x00" * (20 << 20)  # 20 MB of zeros -> ~20 KB deflated
    with pytest.raises(UploadError, match="zip bomb"):
        extract_labelled_zip(make_zip(members), tmp_path)
    assert tree(tmp_path) == []


def test_zip_total_size_cap_refused(tmp_path):
    members = labelled_members()
    with pytest.raises(UploadError, match=r"would unpack to [\d.]+ KB; the limit is 1.0 KB"):
        extract_labelled_zip(make_zip(members, compression=zipfile.ZIP_STORED), tmp_path, max_total_bytes=1000)


def test_zip_total_ratio_refused(tmp_path):
    """Many members each under the per-member grace size, together a bomb."""
    members = {f"real/z{i}.bmp": b"\x00" * (900 << 10) for i in range(4)}
    members.update(labelled_members())
    with pytest.raises(UploadError, match="overall"):
        extract_labelled_zip(make_zip(members), tmp_path)


def test_zip_lying_header_cannot_bypass_caps(tmp_path):
    """Header says 4 KB; the deflated stream really holds 5 MB. Never more than declared is written."""
    members = labelled_members()
    members["real/liar.png"] = b"\x00" * (5 << 20)
    data = patch_headers(make_zip(members), "real/liar.png", file_size=4096)
    with pytest.raises(UploadError, match="liar.png"):
        extract_labelled_zip(data, tmp_path)
    assert tree(tmp_path) == []


def test_zip_understated_size_is_caught(tmp_path):
    """Header says 1000 bytes of an incompressible 300 KB member: refused, nothing left behind."""
    members = labelled_members()
    members["real/big.bmp"] = os.urandom(300_000)  # incompressible: ratio checks do not fire
    data = patch_headers(make_zip(members), "real/big.bmp", file_size=1000)
    with pytest.raises(UploadError, match="big.bmp"):
        extract_labelled_zip(data, tmp_path, max_total_bytes=200_000)
    assert tree(tmp_path) == []


class _Overflowing:
    """A zip reader that hands out more bytes than the header declares (as a buggy or older
    zip library might): the byte counter, not the header, must stop it."""

    def __init__(self, n):
        self.n = n

    def open(self, info):
        return io.BytesIO(b"\x00" * self.n)


@pytest.mark.parametrize("declared,limit,match", [
    (1000, 10**9, "holds more data than its header declares"),
    (10**9, 200_000, "unpacks to more than 200.0 KB"),
])
def test_zip_byte_counter_stops_what_headers_hide(tmp_path, declared, limit, match):
    from realitycheck.intake import uploads

    info = zipfile.ZipInfo("real/x.png")
    info.file_size, info.compress_size = declared, 10**7
    with pytest.raises(UploadError, match=match):
        uploads._extract(_Overflowing(300_000), [(info, ("real", "x.png"))], tmp_path, [], limit, 200)
    assert (tmp_path / "real" / "x.png").stat().st_size <= min(declared, limit)


def test_zip_encrypted_member_refused(tmp_path):
    members = labelled_members()
    data = patch_headers(make_zip(members), "real/r0.png", flag_bits=0x1)
    with pytest.raises(UploadError, match="encrypted"):
        extract_labelled_zip(data, tmp_path)


def test_zip_too_many_members(tmp_path):
    with pytest.raises(UploadError, match="entries; the limit is 5"):
        extract_labelled_zip(make_zip(labelled_members(n=3)), tmp_path, max_members=5)


@pytest.mark.parametrize("data,match", [
    (b"", "not a readable zip"),
    (b"%PDF-1.4 not a zip", "not a readable zip"),
    (PNG, "not a readable zip"),
])
def test_zip_not_a_zip(tmp_path, data, match):
    with pytest.raises(UploadError, match=match):
        extract_labelled_zip(data, tmp_path)


def test_zip_truncated(tmp_path):
    data = make_zip(labelled_members())
    with pytest.raises(UploadError):
        extract_labelled_zip(data[: len(data) // 2], tmp_path)


def test_zip_corrupt_member_crc(tmp_path):
    data = bytearray(make_zip(labelled_members(), compression=zipfile.ZIP_STORED))
    i = data.index(PNG[20:60])  # inside the first stored PNG
    data[i] ^= 0xFF
    with pytest.raises(UploadError, match="corrupt"):
        extract_labelled_zip(bytes(data), tmp_path)
    assert tree(tmp_path) == []


def test_zip_without_labelled_folders(tmp_path):
    with pytest.raises(UploadError, match="real/ and fake/"):
        extract_labelled_zip(make_zip({"photos/a.png": PNG, "photos/b.jpg": JPG}), tmp_path)
    assert tree(tmp_path) == []
    with pytest.raises(UploadError, match="no images"):
        extract_labelled_zip(make_zip({"real/readme.txt": b"x"}), tmp_path)


def test_zip_duplicate_names_are_reported(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in labelled_members().items():
            zf.writestr(name, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("real/r0.png", JPG)
    root, messages = extract_labelled_zip(buf.getvalue(), tmp_path)
    assert any("real/r0.png" in m and "skipped" in m for m in messages)
    assert (root / "real" / "r0.png").read_bytes() == PNG  # the first one wins, nothing is overwritten


def test_zip_extracted_images_classify(tmp_path, tiny_classifier):
    from realitycheck.analysis.evaluate import evaluate_folder

    root, _ = extract_labelled_zip(make_zip(labelled_members(n=2)), tmp_path)
    result = evaluate_folder(tiny_classifier, root, workers=0)
    assert len(result.table) == 4 and (result.table["error"] == "").all()


# ---------------------------------------------------------------------------------------------
# Size budgets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,used,match", [
    (60_000_000, 0, r"photo\.jpg: file is 60\.0 MB; the limit is 50\.0 MB per file"),
    (30_000_000, 180_000_000, r"would bring this session to 210\.0 MB; the limit is 200\.0 MB per session"),
])
def test_check_upload_size_refuses(n, used, match):
    with pytest.raises(UploadError, match=match):
        check_upload_size(n, used, 50_000_000, 200_000_000, name="photo.jpg")


def test_check_upload_size_accepts_and_returns_total():
    assert check_upload_size(10, 20, 50, 100) == 30
    assert check_upload_size(50, 50, 50, 100) == 100  # limits are inclusive
    with pytest.raises(ValueError):
        check_upload_size(-1, 0, 50, 100)
