"""Which server files the dashboard may read, and what a public deployment allows.

The dashboard runs in one of two modes, decided by `load_settings`:

* **local** (default): the conveniences of a tool on your own machine (a folder or CSV path for
  Evaluate, a checkpoint path on the Models page), but a path is read only when it lies under the
  configured roots (default: the working directory and the weights folder). `check_path` refuses
  ``..``, symbolic links that lead out of the roots, device files, FIFOs and sockets; a CSV of paths
  (or a folder holding links) is refused when any file it lists lies outside them
  (`checked_labelled_source`).
* **public** (``REALITYCHECK_PUBLIC=1``, or ``public = true`` in the ``[realitycheck]`` section of
  ``realitycheck.toml``): uploads only. No server path is accepted from anyone, no checkpoint
  upload unless allowed, no slow CAM methods, error messages without server paths (`redact`),
  a smaller per-session upload budget and a per-session rate limit on classifications
  (`rate_check`).

Nothing here imports streamlit: the rules are plain functions the dashboard calls and the tests
call directly. A settings file that cannot be read fails closed (public mode, with the reason).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from realitycheck.intake.data import DataError, LabelledSource, discover

PUBLIC_ENV = "REALITYCHECK_PUBLIC"  # "1"/"true" -> public mode, "0"/"false" -> local (overrides the file)
ROOTS_ENV = "REALITYCHECK_ROOTS"  # folders the local dashboard may read, os.pathsep-separated
CONFIG_ENV = "REALITYCHECK_CONFIG"  # path of the settings file (default: ./realitycheck.toml if present)
CONFIG_FILE = "realitycheck.toml"
SECTION = "realitycheck"

MB = 1024 * 1024


class PathRefused(ValueError):
    """A server path the dashboard will not read; the message is one line, safe to show."""


class ConfigError(ValueError):
    """A settings file that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class AccessSettings:
    """What this deployment allows. Build with `load_settings`; the defaults are local mode."""

    public: bool = False
    roots: tuple[Path, ...] = ()  # folders user-typed paths may point into (local mode only)
    model_roots: tuple[Path, ...] = ()  # folders checkpoints are listed from (both modes)
    allow_checkpoint_upload: bool = True
    slow_methods: bool = True  # ScoreCAM / AblationCAM: minutes of CPU per image
    session_upload_bytes: int = 200 * MB
    classifications_per_minute: int = 0  # 0: no limit
    problem: str | None = None  # why the settings file was not used (then public, fail closed)

    @property
    def server_paths(self) -> bool:
        """Whether users may type server paths at all."""
        return not self.public


PUBLIC_DEFAULTS = dict(allow_checkpoint_upload=False, slow_methods=False, session_upload_bytes=50 * MB,
                       classifications_per_minute=30)
_KEYS = {  # settings-file key -> (field, type)
    "public": ("public", bool), "roots": ("roots", list), "allow_checkpoint_upload": ("allow_checkpoint_upload", bool),
    "slow_cam_methods": ("slow_methods", bool), "session_upload_mb": ("session_upload_bytes", int),
    "classifications_per_minute": ("classifications_per_minute", int),
}


def _truthy(value: str) -> bool | None:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    return None


def read_toml_table(path: Path, table: str, error: type[Exception] = ValueError) -> dict:
    """The [table] of a TOML settings file ({} when absent), or `error` with a one-line reason that
    names the file, never its server path (the dashboard's and the API's settings share the file)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise error(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path.name}: not valid TOML ({exc})") from None
    section = doc.get(table, {})
    if not isinstance(section, dict):
        raise error(f"{path.name}: [{table}] must be a table")
    return section


def _read_file(path: Path) -> dict:
    section = read_toml_table(path, SECTION, ConfigError)
    out = {}
    for key, value in section.items():
        if key not in _KEYS:
            raise ConfigError(f"{path.name}: unknown setting {key!r} in [{SECTION}]; known: {', '.join(_KEYS)}")
        name, kind = _KEYS[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{path.name}: {key} must be a whole number >= 0")
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{path.name}: {key} must be true or false")
        if kind is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{path.name}: {key} must be a list of folder names")
        out[name] = value * MB if name == "session_upload_bytes" else value
    return out


def _model_roots() -> tuple[Path, ...]:
    from realitycheck.model.inference import default_weights_path, weights_dir

    found = []
    for p in (weights_dir(), default_weights_path().parent):
        p = Path(os.path.abspath(p))
        if p not in found:
            found.append(p)
    return tuple(found)


def load_settings(env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> AccessSettings:
    """Settings from the file (``$REALITYCHECK_CONFIG`` or ./realitycheck.toml) and the environment.

    The environment wins over the file. Raises `ConfigError` for an unusable file or value;
    `current` turns that into public mode (fail closed).
    """
    env = os.environ if env is None else env
    base = Path(cwd) if cwd is not None else Path.cwd()
    values: dict = {}
    config = env.get(CONFIG_ENV)
    path = Path(config) if config else base / CONFIG_FILE
    if config or path.is_file():
        values = _read_file(path)
    if env.get(PUBLIC_ENV) is not None:
        flag = _truthy(env[PUBLIC_ENV])
        if flag is None:
            raise ConfigError(f"{PUBLIC_ENV}={env[PUBLIC_ENV]!r}: use 1 (public) or 0 (local)")
        values["public"] = flag
    if env.get(ROOTS_ENV):
        values["roots"] = [r for r in env[ROOTS_ENV].split(os.pathsep) if r.strip()]
    public = bool(values.get("public", False))
    model_roots = _model_roots()
    roots = values.pop("roots", None)
    roots = [Path(os.path.abspath(base / Path(r).expanduser())) for r in roots] if roots else [Path(os.path.abspath(base))]
    merged = {**(PUBLIC_DEFAULTS if public else {}), **values}
    merged["public"] = public
    all_roots = tuple(dict.fromkeys([*roots, *model_roots]))
    return AccessSettings(roots=() if public else all_roots, model_roots=model_roots, **merged)


def current() -> AccessSettings:
    """The settings now (read at each call: tests and operators change the environment)."""
    try:
        return load_settings()
    except ConfigError as exc:
        return AccessSettings(public=True, model_roots=_model_roots(), problem=str(exc), **PUBLIC_DEFAULTS)


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------

def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _roots_text(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots) or "none configured"


def _place(path: Path, roots: Sequence[Path], shown: str) -> Path:
    """The real path of `path` if it lies inside `roots` (lexically and after links), else PathRefused."""
    lexical = os.path.abspath(path)
    real = os.path.realpath(lexical)
    if not any(_inside(real, os.path.realpath(r)) for r in roots):
        if any(_inside(lexical, os.path.abspath(r)) for r in roots) or os.path.islink(lexical):
            raise PathRefused(f"{shown}: is or passes through a symbolic link that leads out of the folders "
                              f"this dashboard may read ({_roots_text(roots)}); refused")
        raise PathRefused(f"{shown}: outside the folders this dashboard may read ({_roots_text(roots)}); "
                          f"set {ROOTS_ENV} or roots in {CONFIG_FILE} to allow another folder")
    return Path(real)


def check_path(raw: str | os.PathLike, settings: AccessSettings, *, want: str = "any",
               roots: Sequence[Path] | None = None) -> Path:
    """A user-typed server path, resolved, if this deployment may read it; else `PathRefused`.

    `want` is "file", "dir" or "any". Refused: public mode (always), empty paths, NUL bytes, any
    ``..`` component, paths outside the roots, symbolic links out of them, missing paths, and
    anything that is not a regular file or folder (devices, FIFOs, sockets).
    """
    if settings.public:
        raise PathRefused("server paths are turned off on this public deployment: upload files instead")
    text = str(raw).strip()
    if not text:
        raise PathRefused("enter a path first")
    shown = "".join(c if c.isprintable() else "?" for c in text)[:300]
    if "\x00" in text:
        raise PathRefused(f"{shown}: contains a NUL character; refused")
    path = Path(text).expanduser()
    if ".." in path.parts:
        raise PathRefused(f"{shown}: '..' is not allowed in a path; give the folder itself")
    if not path.is_absolute():
        path = Path.cwd() / path
    real = _place(path, settings.roots if roots is None else roots, shown)  # before existence: no oracle
    if not os.path.lexists(path):
        raise PathRefused(f"{shown}: no such file or folder")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise PathRefused(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise PathRefused(f"{shown}: is a device or special file, not a regular file or folder; refused")
    if want == "file" and not stat.S_ISREG(mode):
        raise PathRefused(f"{shown}: is a folder; expected a file")
    if want == "dir" and not stat.S_ISDIR(mode):
        raise PathRefused(f"{shown}: is a file; expected a folder")
    return real


@dataclass
class CheckedSource(LabelledSource):
    """A labelled source whose every file was checked against the roots; iterates the checked list."""

    items: list = field(default_factory=list)

    def __iter__(self):
        yield from self.items


def checked_labelled_source(raw: str | os.PathLike, settings: AccessSettings, *, split: str | None = None,
                            max_listed: int = 3) -> CheckedSource:
    """`data.discover` on a user-typed folder or CSV, after `check_path` on it and on every file it yields.

    A CSV is a list of paths anyone can write, and a folder can hold links: one listed file outside
    the roots (or one device file) refuses the whole source, naming the first few offenders.
    """
    path = check_path(raw, settings)
    src = discover(path, split=split)  # DataError for a folder/CSV without labelled data
    items, bad = [], []
    for p, label in src:
        try:
            items.append((check_path(p, settings, want="file"), label))
        except PathRefused as exc:
            if "no such file" in str(exc):
                items.append((Path(p), label))  # reported per image ("no such file"), as before
            else:
                bad.append(str(exc))
    if bad:
        more = f" (and {len(bad) - max_listed} more)" if len(bad) > max_listed else ""
        raise PathRefused(f"{path.name}: {len(bad)} listed file(s) may not be read, so nothing was: "
                          + "; ".join(bad[:max_listed]) + more)
    fields = {k: getattr(src, k) for k in ("root", "class_dirs", "csv_rows", "mapping", "split")}
    return CheckedSource(**fields, items=items)


def model_allowed(path: str | os.PathLike, settings: AccessSettings, session_dirs: Iterable[str | os.PathLike] = ()) -> bool:
    """Whether a checkpoint path (e.g. one held in session state) may be loaded.

    Both modes: inside the weights folders or this session's own upload folders; local mode also
    under the roots. A value planted in session state pointing elsewhere is never opened.
    """
    allowed = [*settings.model_roots, *(Path(d) for d in session_dirs)]
    if not settings.public:
        allowed += list(settings.roots)
    try:
        p = Path(path)
        if not p.is_absolute() or ".." in p.parts:
            return False
        _place(p, allowed, "checkpoint")
        return stat.S_ISREG(os.stat(p).st_mode)
    except (PathRefused, OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Public-mode limits
# ---------------------------------------------------------------------------------------------

def rate_check(stamps: Sequence[float], now: float, limit: int, window_s: float = 60.0,
               cost: int = 1) -> tuple[bool, list[float], float]:
    """A sliding-window limit: (allowed, the stamps to keep, seconds to wait when refused).

    `stamps` are the times of earlier classifications in this session; `cost` is how many this
    request adds. `limit` 0 means no limit. The caller stores the returned stamps.
    """
    kept = [t for t in stamps if 0 <= now - t < window_s]
    if limit <= 0:
        return True, [], 0.0
    if cost > limit:
        return False, kept, float(window_s)
    over = len(kept) + cost - limit
    if over <= 0:
        return True, kept + [now] * cost, 0.0
    kept.sort()
    return False, kept, max(0.0, kept[over - 1] + window_s - now)


def rate_allowance(stamps: Sequence[float], now: float, limit: int, want: int,
                   window_s: float = 60.0) -> tuple[int, list[float], float]:
    """How many of `want` classifications may run now: (n allowed, the stamps to keep with them
    counted, seconds until the rest could run). A batch over the budget is scored up to it instead
    of being refused outright, so no retry is ever refused forever. The wait is until the first
    `want - n` slots come free (at most one window; a rest bigger than `limit` needs several batches).
    """
    kept = sorted(t for t in stamps if 0 <= now - t < window_s)
    if limit <= 0:
        return want, [], 0.0
    n = max(0, min(want, limit - len(kept)))
    kept = kept + [now] * n
    rest = want - n
    if rest <= 0:
        return n, kept, 0.0
    free_at = kept[min(rest, len(kept)) - 1] + window_s  # the rest-th stamp to expire
    return n, kept, max(0.0, free_at - now)


def rate_allowance_message(limit: int, allowed: int, want: int, wait_s: float, window_s: float = 60.0) -> str:
    """What a user is told when only part of a batch (or none of it) can run now."""
    rest = want - allowed
    head = (f"This session may classify {limit} images per {window_s:.0f} s on this server: "
            + (f"{allowed} of these {want} were classified now; " if allowed else "none of these could run now; ")
            + f"{rest} {'was' if rest == 1 else 'were'} left for later.")
    if rest > limit:
        return head + (f" Submit them again in batches of at most {limit}, the first in "
                       f"{max(1, round(wait_s))} s.")
    return head + f" Submit {'it' if rest == 1 else 'them'} again in {max(1, round(wait_s))} s."


def rate_message(limit: int, wait_s: float, window_s: float = 60.0) -> str:
    return (f"This session is limited to {limit} classifications per {window_s:.0f} s on this server; "
            f"try again in {max(1, round(wait_s))} s.")


_ABS_PATH = re.compile(r"(?<![\w.:/~-])(/(?:[^\s'\"`/:;,()\[\]<>]+/)+)([^\s'\"`/:;,()\[\]<>]*)")


def redact(text: str, settings: AccessSettings) -> str:
    """In public mode, absolute server paths in a message become their last component."""
    if not settings.public or not text:
        return text
    return _ABS_PATH.sub(lambda m: m.group(2) or "(server folder)", str(text))


__all__ = ["AccessSettings", "PathRefused", "ConfigError", "CheckedSource", "load_settings", "current",
           "check_path", "checked_labelled_source", "model_allowed", "rate_allowance", "rate_allowance_message", "rate_check",
           "rate_message", "redact",
           "DataError"]
