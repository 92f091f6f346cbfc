"""The service's settings: the `[serve]` table of realitycheck.toml, then the environment, then flags.

API keys are stored only as SHA-256 hashes (``realitycheck serve --hash-key`` prints one); a request
presents the key itself in ``Authorization: Bearer KEY`` or ``X-API-Key``. With no key configured the
API is open, which is allowed only on a loopback address unless the operator says otherwise
(`check_exposure`): a service on a network must not be anonymous by accident.

The dashboard's rules (`access.current()`: public mode, server-path roots) apply here too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from realitycheck.serving import access

MB = 1024 * 1024
KEYS_ENV = "REALITYCHECK_API_KEYS"  # name:sha256hex,name2:sha256hex (hashes, never the keys)
SECTION = "serve"


class ServeConfigError(ValueError):
    """A setting that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class ServeSettings:
    """What this service allows. Defaults suit one user on localhost."""

    host: str = "127.0.0.1"
    port: int = 8000
    key_hashes: Mapping[str, str] = field(default_factory=dict)  # key name -> sha256 hex of the key
    allow_anonymous: bool = False  # open API on a non-loopback address (e.g. behind an authenticating proxy)
    max_body_bytes: int = 60 * MB  # a request body larger than this: 413 before it is read
    max_images: int = 16  # images (files + paths) per request
    max_pixels: int = 40_000_000  # per image, from the header before decoding (images.MAX_PIXELS caps it too)
    workers: int = 2  # requests scored at once: 2 let decoding and face finding of one overlap the forward pass of another (README)
    queue: int = 16  # requests waiting for a worker; beyond this 503 + Retry-After
    rate_per_minute: int = 0  # images per key (or client address) per minute; 0: no limit (public: 30)
    slow_methods: bool = False  # ScoreCAM / AblationCAM on /v1/explain (minutes of CPU per image)
    graceful_timeout_s: float = 30.0  # on shutdown, in-flight requests get this long to finish
    access: access.AccessSettings = field(default_factory=access.AccessSettings)

    @property
    def keys_on(self) -> bool:
        return bool(self.key_hashes)

    def key_name(self, presented: str | None) -> str | None:
        """The name of the configured key `presented` matches, or None (constant-time per key)."""
        if not presented:
            return None
        digest = hash_key(presented)
        found = None
        for name, want in self.key_hashes.items():
            if hmac.compare_digest(digest, want):
                found = name
        return found


def hash_key(key: str) -> str:
    """What the settings store for an API key: its SHA-256, hex."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: ServeSettings) -> str | None:
    """Why this service must not start as configured (an open API on a network address), or None."""
    if _loopback(settings.host) or settings.keys_on or settings.allow_anonymous:
        return None
    return (f"refusing to serve {settings.host} without API keys: anyone who can reach it could use it. "
            f"Add key hashes (realitycheck serve --hash-key; [serve] keys in realitycheck.toml or {KEYS_ENV}), "
            "or pass --allow-anonymous if a proxy in front authenticates")


_INTS = {"max_body_mb": "max_body_bytes", "max_images": "max_images", "max_pixels": "max_pixels", "workers": "workers",
         "queue": "queue", "rate_per_minute": "rate_per_minute", "port": "port"}
_BOOLS = {"allow_anonymous": "allow_anonymous", "slow_cam_methods": "slow_methods"}


def _parse_key_hashes(entries: Mapping[str, object], where: str) -> dict[str, str]:
    out = {}
    for name, value in entries.items():
        h = str(value).strip().lower().removeprefix("sha256:")
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise ServeConfigError(f"{where}: key {name!r} must be the SHA-256 hex of the key (64 hex digits; "
                                   "realitycheck serve --hash-key prints it), never the key itself")
        out[str(name)] = h
    return out


def _read_section(path: Path) -> dict:
    section = access.read_toml_table(path, SECTION, ServeConfigError)
    out: dict = {}
    for key, value in section.items():
        if key == "keys":
            if not isinstance(value, dict):
                raise ServeConfigError(f"{path.name}: [{SECTION}.keys] must be a table of name = \"sha256 hex\"")
            out["key_hashes"] = _parse_key_hashes(value, path.name)
        elif key == "host":
            out["host"] = str(value)
        elif key == "graceful_timeout_s":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ServeConfigError(f"{path.name}: graceful_timeout_s must be a number of seconds >= 0")
            out["graceful_timeout_s"] = float(value)
        elif key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ServeConfigError(f"{path.name}: {key} must be a whole number >= 0")
            out[_INTS[key]] = value * MB if key == "max_body_mb" else value
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise ServeConfigError(f"{path.name}: {key} must be true or false")
            out[_BOOLS[key]] = value
        else:
            known = ", ".join(["keys", "host", "graceful_timeout_s", *_INTS, *_BOOLS])
            raise ServeConfigError(f"{path.name}: unknown setting {key!r} in [{SECTION}]; known: {known}")
    return out


def load_serve_settings(env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
                        **overrides) -> ServeSettings:
    """Settings from the file ($REALITYCHECK_CONFIG or ./realitycheck.toml), the environment, then `overrides`.

    Raises ServeConfigError (and access.ConfigError) for unusable values: a service does not start
    on settings it cannot read (the dashboard fails closed to public mode; a server fails loudly).
    """
    env = os.environ if env is None else env
    base = Path(cwd) if cwd is not None else Path.cwd()
    acc = access.load_settings(env, base)
    config = env.get(access.CONFIG_ENV)
    path = Path(config) if config else base / access.CONFIG_FILE
    values = _read_section(path) if (config or path.is_file()) else {}
    if env.get(KEYS_ENV):
        pairs = [p.split(":", 1) for p in env[KEYS_ENV].split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ServeConfigError(f"{KEYS_ENV}: expected name:sha256hex, comma-separated")
        values["key_hashes"] = _parse_key_hashes({n.strip(): h for n, h in pairs}, KEYS_ENV)
    if acc.public:  # public mode: the dashboard's limits
        values.setdefault("rate_per_minute", acc.classifications_per_minute)
        values["slow_methods"] = False
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = ServeSettings(access=acc, **values)
    if settings.workers < 1:
        raise ServeConfigError("workers must be at least 1")
    if not 0 < settings.port < 65536:
        raise ServeConfigError(f"port {settings.port}: must be between 1 and 65535")
    return settings


__all__ = ["ServeSettings", "ServeConfigError", "hash_key", "check_exposure", "load_serve_settings"]
