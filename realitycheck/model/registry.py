"""The model registry: every model `learn` made, which one is active, and a one-step rollback.

A folder (``weights/registry/``, or ``$REALITYCHECK_REGISTRY``) holding one sub-folder per version
(``v001/``, ``v002/`` ...) with ``version.json`` (parent, status, data, cases used, the gate's report,
the card) and, for learned versions, ``model.pt`` + its card ``model.md``. A *base* version points at a
checkpoint that lives elsewhere (the model `learn` started from), so rolling back to it gives exactly
that file's answers. ``active.json`` names the active version and the ones active before it.

The active version is what "the default model" means to the CLI and the dashboard
(`default_weights_path` below), unless ``$REALITYCHECK_WEIGHTS`` names a file explicitly.
No torch here: reading the registry is cheap.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import uuid
from pathlib import Path

from realitycheck import REPO_ROOT

REGISTRY_ENV = "REALITYCHECK_REGISTRY"
ACTIVE_FILE = "active.json"
VERSION_FILE = "version.json"


# The shipped default (what a fresh clone runs), unless the registry has an active version
DEFAULT_WEIGHTS_NAME = "realitycheck-lite2-t2i.pt"


class NoWeightsError(FileNotFoundError):
    """No trained weights are available; the app and CLI say so instead of guessing."""


def weights_dir() -> Path:
    """The weights folder: $REALITYCHECK_WEIGHTS_DIR, read at each call (the app and tests set it late)."""
    env = os.environ.get("REALITYCHECK_WEIGHTS_DIR")
    return Path(env) if env else REPO_ROOT / "weights"


def default_weights_path() -> Path:
    """$REALITYCHECK_WEIGHTS, else the model registry's active version (`learn`, `models use`), else the shipped file."""
    env = os.environ.get("REALITYCHECK_WEIGHTS")
    if env:
        return Path(env)
    return active_weights() or weights_dir() / DEFAULT_WEIGHTS_NAME


def list_weights(folder: str | os.PathLike | None = None) -> list[Path]:
    folder = Path(folder) if folder else weights_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".pt", ".pth") and ".train-state" not in p.name)


class RegistryError(ValueError):
    """A registry request that cannot be done (unknown version, nothing to roll back to); one line."""


def registry_dir() -> Path:
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    return weights_dir() / "registry"


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)  # readers see the old or the new file, never half of one


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path.name} in the model registry cannot be read ({exc})") from None


def file_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def versions(root: Path | None = None) -> list[dict]:
    """Every version, oldest first (each version.json with its folder under "dir")."""
    root = root or registry_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and (p / VERSION_FILE).is_file()):
        v = _read_json(d / VERSION_FILE)
        if v:
            v["dir"] = str(d)
            out.append(v)
    return out


def get(version_id: str, root: Path | None = None) -> dict:
    for v in versions(root):
        if v["id"] == version_id:
            return v
    known = ", ".join(v["id"] for v in versions(root)) or "none yet"
    raise RegistryError(f"no model version {version_id!r} in the registry (versions: {known})")


def weights_of(version: dict) -> Path:
    """The checkpoint file of a version (a base version's lives outside the registry)."""
    p = Path(version["weights"])
    return p if p.is_absolute() else Path(version["dir"]) / p


def new_version_dir(root: Path | None = None) -> tuple[str, Path]:
    """A fresh, empty version folder (v001, v002 ...), claimed atomically (mkdir)."""
    root = root or registry_dir()
    root.mkdir(parents=True, exist_ok=True)
    n = len([p for p in root.iterdir() if p.is_dir() and p.name.startswith("v")])
    while True:
        n += 1
        vid = f"v{n:03d}"
        try:
            (root / vid).mkdir()
            return vid, root / vid
        except FileExistsError:
            continue


def save_version(vdir: Path, meta: dict) -> dict:
    meta = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **meta}
    _write_json(vdir / VERSION_FILE, meta)
    meta["dir"] = str(vdir)
    return meta


def find_by_weights(path: str | os.PathLike, root: Path | None = None) -> dict | None:
    """The version whose checkpoint is this file (same bytes), if any."""
    p = Path(path).resolve()
    digest = None
    for v in versions(root):
        w = weights_of(v)
        if w.resolve() == p:
            return v
        if w.is_file() and v.get("weights_hash"):
            digest = digest or file_hash(p)
            if v["weights_hash"] == digest:
                return v
    return None


def register_base(path: str | os.PathLike, root: Path | None = None) -> dict:
    """The version for a model that was not made by `learn` (the one it starts from); reused when present."""
    found = find_by_weights(path, root)
    if found:
        return found
    vid, vdir = new_version_dir(root)
    return save_version(vdir, {"id": vid, "parent": None, "status": "base", "weights": str(Path(path).resolve()),
                               "weights_hash": file_hash(path), "note": "the model learn started from"})


# -- which version is active -----------------------------------------------------------------

def _active_doc(root: Path | None = None) -> dict:
    return _read_json((root or registry_dir()) / ACTIVE_FILE) or {"active": None, "history": []}


def active(root: Path | None = None) -> dict | None:
    """The active version, or None (then the default model is the shipped file)."""
    vid = _active_doc(root).get("active")
    if not vid:
        return None
    try:
        return get(vid, root)
    except RegistryError:
        return None


def active_weights(root: Path | None = None) -> Path | None:
    """The active version's checkpoint, when there is one and it exists (else None: the usual default)."""
    try:
        v = active(root)
    except RegistryError:
        return None
    if v is None:
        return None
    p = weights_of(v)
    return p if p.is_file() else None


def use(version_id: str, root: Path | None = None, *, base_path: str | os.PathLike | None = None) -> dict:
    """Make a version active; the one active before is remembered for `rollback`.

    `base_path`: the model in use when the registry had no active version yet (registered as a base
    version, so a rollback returns to it)."""
    root = root or registry_dir()
    target = get(version_id, root)
    if not weights_of(target).is_file():
        raise RegistryError(f"{version_id} ({target.get('status')}) has no model file to use")
    doc = _active_doc(root)
    prev = doc.get("active")
    if prev is None and base_path is not None and Path(base_path).is_file():
        prev = register_base(base_path, root)["id"]
    if prev and prev != version_id:
        doc["history"] = [*doc.get("history", []), prev]
    doc["active"] = version_id
    _write_json(root / ACTIVE_FILE, doc)
    return target


def rollback(root: Path | None = None) -> dict:
    """Make the previously active version active again (one step back); returns it."""
    root = root or registry_dir()
    doc = _active_doc(root)
    history = list(doc.get("history", []))
    if not history:
        raise RegistryError("nothing to roll back to: no model was active before this one")
    prev = history.pop()
    get(prev, root)  # still there
    _write_json(root / ACTIVE_FILE, {"active": prev, "history": history})
    return get(prev, root)


__all__ = ["RegistryError", "registry_dir", "versions", "get", "weights_of", "new_version_dir", "save_version",
           "register_base", "active", "active_weights", "use", "rollback", "find_by_weights"]
