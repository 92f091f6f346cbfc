"""Untrusted uploads: labelled-image zips and size budgets.

A zip uploaded to the dashboard is attacker-controlled: member names can climb out of the
target folder (`../`, `/etc/...`), members can be symlinks, headers can lie about sizes, and
a few kilobytes can inflate to gigabytes. `extract_labelled_zip` refuses all of that before
anything reaches the disk, and counts the bytes it actually writes, so no header can talk it
past the caps. Everything extracted lives in a temporary folder under `dest_dir`, removed again
if the extraction is refused.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from realitycheck.intake.images import IMAGE_EXTENSIONS

CHUNK = 1 << 16
# Members smaller than this are never refused for their compression ratio: a tiny uniform BMP
# legitimately compresses 500x, and a few hundred KB cannot hurt anyone.
RATIO_GRACE_BYTES = 1 << 20
# Files and folders a zip tool adds that are not data; skipped without a message.
_JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}


class UploadError(ValueError):
    """An upload that is refused; the message is safe and useful to show the user."""


def _mb(n: float) -> str:
    """Human-readable size in decimal units (what browsers and file managers show)."""
    if n < 1000:
        return f"{int(n)} bytes"
    if n < 1e6:
        return f"{n / 1e3:.1f} KB"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


# ---------------------------------------------------------------------------------------------
# Size budgets
# ---------------------------------------------------------------------------------------------

def check_upload_size(n_bytes: int, used_bytes: int, per_file_limit: int, per_session_limit: int,
                      *, name: str | None = None) -> int:
    """Refuse a file that is too big, or that would take the session over its budget.

    The dashboard keeps uploads in memory per browser session; without a session budget many
    small uploads add up to the same outage as one huge one. Returns the new total.
    """
    if n_bytes < 0 or used_bytes < 0:
        raise ValueError("sizes must be non-negative")
    label = f"{name}: " if name else ""
    if n_bytes > per_file_limit:
        raise UploadError(f"{label}file is {_mb(n_bytes)}; the limit is {_mb(per_file_limit)} per file")
    if used_bytes + n_bytes > per_session_limit:
        raise UploadError(
            f"{label}this upload ({_mb(n_bytes)}) would bring this session to {_mb(used_bytes + n_bytes)}; "
            f"the limit is {_mb(per_session_limit)} per session (clear earlier uploads first)"
        )
    return used_bytes + n_bytes


# ---------------------------------------------------------------------------------------------
# Temporary folders
# ---------------------------------------------------------------------------------------------

def _rmtree(path: str) -> None:
    """Remove a tree even if an extracted file was made read-only."""

    def onexc(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if os.path.lexists(path):
        try:
            shutil.rmtree(path, onexc=onexc)
        except TypeError:  # Python < 3.12: onerror has the same shape for our purpose
            shutil.rmtree(path, onerror=lambda f, p, e: onexc(f, p, e[1]))


# ---------------------------------------------------------------------------------------------
# Zips of labelled images
# ---------------------------------------------------------------------------------------------

def _safe_member_path(name: str) -> tuple[str, ...]:
    """The parts of a member name, or UploadError if it could land outside the target folder."""
    if "\x00" in name:
        raise UploadError(f"zip member {name!r}: name contains a NUL byte; refused")
    norm = name.replace("\\", "/")  # zips made on Windows may use backslashes
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or norm.startswith("//"):
        raise UploadError(f"zip member {name!r}: absolute path; refused (members must be relative)")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UploadError(f"zip member {name!r}: path climbs out of the folder ('..'); refused")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    """Unix zips keep the file mode in the high 16 bits of external_attr; S_IFLNK marks a link."""
    return stat.S_ISLNK(info.external_attr >> 16)


def _find_labelled_root(root: Path) -> Path:
    """The shallowest folder under `root` that `data.discover` accepts (real/ and fake/ inside)."""
    from realitycheck.intake.data import DataError, discover

    queue = [root]
    while queue:
        folder = queue.pop(0)
        try:
            discover(folder)
            return folder
        except DataError:
            pass
        if len(folder.relative_to(root).parts) < 6:
            queue += sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    raise UploadError("the zip holds no labelled folders: expected folders named real/ and fake/ "
                      "(fake may also be ai, generated or synthetic) somewhere inside")


def extract_labelled_zip(data: bytes, dest_dir: str | os.PathLike, *, max_members: int = 20000,
                         max_total_bytes: int = 2_000_000_000, max_ratio: float = 200) -> tuple[Path, list[str]]:
    """Safely extract a zip of labelled images into a new folder inside `dest_dir`.

    Refuses (UploadError, nothing left behind): a file that is not a zip, more than
    `max_members` entries, `..` or absolute member names, symlink members, encrypted members,
    declared or actual uncompressed size over `max_total_bytes`, and members (or the whole zip)
    inflating more than `max_ratio` times. Members that are not images (by extension) are skipped
    with one message each. Returns (folder to pass to `data.discover`, messages).
    """
    dest_dir = Path(dest_dir)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise UploadError(f"not a readable zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise UploadError(f"the zip has {len(infos)} entries; the limit is {max_members}")
        plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        messages: list[str] = []
        declared_total = 0
        compressed_total = 0
        for info in infos:
            parts = _safe_member_path(info.filename)  # checked for every entry, even skipped ones
            if _is_symlink(info):
                raise UploadError(f"zip member {info.filename!r}: is a symbolic link; refused")
            if info.flag_bits & 0x1:
                raise UploadError(f"zip member {info.filename!r}: is encrypted; upload an unencrypted zip")
            if info.is_dir() or not parts:
                continue
            if any(p in _JUNK_PARTS or p.startswith("._") for p in parts):
                continue
            if Path(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
                messages.append(f"{info.filename}: skipped (not an image file: expected one of "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
                continue
            if info.file_size > RATIO_GRACE_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
                raise UploadError(
                    f"zip member {info.filename!r}: inflates {info.file_size / max(info.compress_size, 1):.0f}x "
                    f"(limit {max_ratio:.0f}x); refused as a possible zip bomb")
            declared_total += info.file_size
            compressed_total += info.compress_size
            plan.append((info, parts))
        if declared_total > max_total_bytes:
            raise UploadError(f"the zip would unpack to {_mb(declared_total)}; the limit is {_mb(max_total_bytes)}")
        if declared_total > RATIO_GRACE_BYTES and declared_total > max_ratio * max(compressed_total, 1):
            raise UploadError(f"the zip inflates {declared_total / max(compressed_total, 1):.0f}x overall "
                              f"(limit {max_ratio:.0f}x); refused as a possible zip bomb")
        if not plan:
            raise UploadError("the zip holds no images" + (f" ({len(messages)} other files skipped)" if messages else ""))

        dest_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="zip-", dir=dest_dir))
        try:
            _extract(zf, plan, root, messages, max_total_bytes, max_ratio)
            return _find_labelled_root(root), messages
        except BaseException:
            _rmtree(str(root))
            raise


def _extract(zf: zipfile.ZipFile, plan, root: Path, messages: list[str], max_total_bytes: int,
             max_ratio: float) -> None:
    """Stream each member to disk, counting real bytes: headers are only claims."""
    written_total = 0
    root_real = os.path.realpath(root)
    for info, parts in plan:
        target = root.joinpath(*parts)
        if not os.path.realpath(target).startswith(root_real + os.sep):  # belt and braces
            raise UploadError(f"zip member {info.filename!r}: resolves outside the folder; refused")
        member_limit = max(info.file_size, 0)
        ratio_limit = max(RATIO_GRACE_BYTES, max_ratio * max(info.compress_size, 1))
        written = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "xb") as dst:  # "x": never follow or overwrite
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > member_limit:
                        raise UploadError(f"zip member {info.filename!r}: holds more data than its header "
                                          f"declares ({member_limit} bytes); refused")
                    if written > ratio_limit:
                        raise UploadError(f"zip member {info.filename!r}: inflates more than {max_ratio:.0f}x; "
                                          "refused as a possible zip bomb")
                    if written_total > max_total_bytes:
                        raise UploadError(f"the zip unpacks to more than {_mb(max_total_bytes)}; refused")
                    dst.write(chunk)
        except (FileExistsError, NotADirectoryError):
            messages.append(f"{info.filename}: skipped (clashes with a file of the same name already extracted)")
            continue
        except UploadError:
            raise
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
            raise UploadError(f"zip member {info.filename!r}: corrupt or unsupported ({exc}); refused") from None
        except OSError as exc:
            raise UploadError(f"zip member {info.filename!r}: cannot be written ({exc.strerror or exc})") from None
        if written < member_limit:
            raise UploadError(f"zip member {info.filename!r}: shorter than its header declares; refused")


__all__ = ["UploadError", "check_upload_size", "extract_labelled_zip",
           "safe_file_name", "write_labelled_folder"]


def safe_file_name(name: str, default: str = "upload") -> str:
    """An uploaded file's name as a plain file name: no folders, no odd characters, at most 100 long."""
    return re.sub(r"[^\w.\-]", "_", Path(str(name)).name)[-100:] or default


def write_labelled_folder(files_by_label: dict[str, list[tuple[str, bytes]]], dest_dir: str | os.PathLike) -> Path:
    """Uploaded files, grouped by their true class, as the labelled folder `data.discover` reads.

    Names are made safe (no folders, no odd characters) and numbered, so two uploads called
    "photo.jpg" both survive. Returns the folder (holding one subfolder per label).
    """
    root = Path(dest_dir)
    for label, files in files_by_label.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, (name, data) in enumerate(files):
            (folder / f"{i:05d}_{safe_file_name(name, 'image')}").write_bytes(data)
    return root
