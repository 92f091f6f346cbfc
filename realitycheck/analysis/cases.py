"""The case database: every judgement kept, so analysts can review, correct, and the model can learn.

A *case* is one image file, keyed by the sha256 of its bytes: a thumbnail, its first and last
sighting, the analyst's true label (with generator and note) and, where allowed, a stored copy of
the image (what `learn` trains on). A *judgement* is one verdict on a case: when, where from
(page or command, session), which model (card name + file hash), p_fake, threshold, verdict,
unfamiliar score, faces, the generator guess when the model has one, and what the file declares.
The same image judged twice is one case with two judgements.

Storage goes through SQLAlchemy Core, so the default SQLite file (``~/.realitycheck/cases.db``, or
``$REALITYCHECK_DB``: a path or a URL) and a team's PostgreSQL URL work the same. The schema is
versioned in a ``schema_version`` table (`MIGRATIONS` upgrades older files in place). SQLite runs
in WAL mode, takes its write lock up front (BEGIN IMMEDIATE) and waits for a busy lock, so two
dashboard sessions and a CLI run writing at once lose nothing. Every failure of the database itself
(corrupt file, locked past the timeout, unreachable server) is a `CaseStoreError` with one clear
line: callers still show the verdict.

Public deployments store nothing unless the operator configures a database (``REALITYCHECK_DB``),
and never keep uploaded images unless ``REALITYCHECK_STORE_UPLOADS=1`` (`settings`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

DB_ENV = "REALITYCHECK_DB"  # path of the SQLite file, or a SQLAlchemy URL (postgresql://...)
CASES_ENV = "REALITYCHECK_CASES"  # "0": record nothing (local mode; public mode is off unless DB_ENV is set)
STORE_ENV = "REALITYCHECK_STORE_UPLOADS"  # "1"/"0": keep image copies (default: on locally, off in public mode)
IMAGES_ENV = "REALITYCHECK_CASE_IMAGES"  # folder of stored image copies (default: beside the SQLite file)
DEFAULT_DB = Path("~/.realitycheck/cases.db")
SCHEMA_VERSION = 1
THUMB_PX = 96
LABELS = ("real", "fake")
HOLDOUT_FRACTION = 0.2


class CaseStoreError(RuntimeError):
    """The case database cannot be used (corrupt, locked, unreachable, newer schema); one line, no path."""


class CaseNotFound(KeyError):
    """No case has this sha256 (or prefix); str() is the message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such case"


# ---------------------------------------------------------------------------------------------
# Where the database is, and whether to use it
# ---------------------------------------------------------------------------------------------

def _truthy(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    return True if v in ("1", "true", "yes", "on") else False if v in ("0", "false", "no", "off", "") else None


def database_url(env: Mapping[str, str] | None = None) -> str:
    """`$REALITYCHECK_DB` as a SQLAlchemy URL (a bare path means a SQLite file), else the default file."""
    env = os.environ if env is None else env
    raw = (env.get(DB_ENV) or "").strip()
    if "://" in raw:
        return raw
    path = Path(raw or DEFAULT_DB).expanduser()
    return f"sqlite:///{path.resolve()}"


@dataclass(frozen=True)
class CaseSettings:
    """Whether judgements are recorded here, where, and whether image copies are kept."""

    enabled: bool
    url: str
    store_images: bool
    reason: str = ""  # why recording is off, in words


def settings(public: bool = False, env: Mapping[str, str] | None = None) -> CaseSettings:
    """Local: on (``REALITYCHECK_CASES=0`` turns it off), image copies kept. Public: off unless
    ``REALITYCHECK_DB`` names this deployment's database; uploads kept only with ``REALITYCHECK_STORE_UPLOADS=1``."""
    env = os.environ if env is None else env
    url = database_url(env)
    store = _truthy(env.get(STORE_ENV))
    if public:
        if not (env.get(DB_ENV) or "").strip():
            return CaseSettings(False, url, False, "public mode: no case database configured (set REALITYCHECK_DB)")
        return CaseSettings(True, url, bool(store), "")
    if _truthy(env.get(CASES_ENV)) is False:
        return CaseSettings(False, url, False, f"turned off ({CASES_ENV}=0)")
    return CaseSettings(True, url, store is not False, "")


# ---------------------------------------------------------------------------------------------
# Schema (versioned)
# ---------------------------------------------------------------------------------------------

metadata = sa.MetaData()

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

cases_table = sa.Table(
    "cases", metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text),  # the file name it last came with (never a server folder)
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("last_seen", sa.DateTime, nullable=False),
    sa.Column("thumbnail", sa.LargeBinary),  # small JPEG
    sa.Column("image_file", sa.Text),  # stored copy's file name in the images folder, or NULL
    sa.Column("true_label", sa.String(8)),  # "real" | "fake" | NULL (not reviewed)
    sa.Column("true_generator", sa.Text),
    sa.Column("note", sa.Text),
    sa.Column("reviewed_at", sa.DateTime),
)

judgements_table = sa.Table(
    "judgements", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), sa.ForeignKey("cases.sha256", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),  # "dashboard:classify", "cli:predict", "cli:evaluate", "api" ...
    sa.Column("session", sa.Text),
    sa.Column("model_id", sa.Text),  # the card's name
    sa.Column("model_hash", sa.String(64)),  # sha256 of the checkpoint file (first 16 hex digits)
    sa.Column("p_fake", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("verdict", sa.String(8)),
    sa.Column("unfamiliar", sa.Boolean),
    sa.Column("ood_score", sa.Float),
    sa.Column("faces", sa.Integer),
    sa.Column("generator", sa.Text),  # JSON of the model's generator guess, when it has one
    sa.Column("provenance_kind", sa.String(16)),
    sa.Column("provenance", sa.Text),  # JSON summary of what the file declares
    sa.Column("prediction", sa.Text),  # JSON of Prediction.to_dict(): everything, for later fields
)

# version -> function(connection) that upgrades a file at `version - 1` to `version`
MIGRATIONS: dict[int, Any] = {}


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------

def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_holdout(sha256: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    """The cases' own held-out share, chosen by the file's hash: the same on every machine and every
    run, so a case held out once is never trained on later."""
    return int(sha256[:12], 16) / float(16 ** 12) < fraction


def thumbnail_jpeg(data: bytes | None = None, image=None, px: int = THUMB_PX) -> bytes | None:
    """A small JPEG of the image (decoded through `images.load_image`, so bad bytes give None)."""
    from realitycheck.intake.images import ImageError, load_image

    try:
        img = image if image is not None else load_image(data, name="case").image
    except ImageError:
        return None
    thumb = img.convert("RGB").copy()
    thumb.thumbnail((px, px))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _translate(exc: BaseException) -> CaseStoreError:
    msg = _one_line(exc).lower()
    if "locked" in msg or "busy" in msg:
        return CaseStoreError("the case database is locked by another program (waited, still busy): the verdict "
                              "was not recorded; try again")
    if "not a database" in msg or "malformed" in msg or "file is encrypted" in msg:
        return CaseStoreError("the case database file is damaged or is not a database: the verdict was not "
                              f"recorded (move the file aside, or point {DB_ENV} elsewhere)")
    if "unable to open" in msg or "readonly" in msg or "read-only" in msg:
        return CaseStoreError(f"the case database cannot be opened for writing ({_one_line(exc)}); check {DB_ENV}")
    return CaseStoreError(f"the case database failed: {_one_line(exc)}")


class CaseStore:
    """One database (and its folder of image copies). Thread-safe: every call is its own transaction."""

    def __init__(self, url: str | None = None, *, images_dir: str | os.PathLike | None = None,
                 store_images: bool = True, timeout_s: float = 30.0):
        self.url = url or database_url()
        self.store_images = store_images
        u = sa.engine.make_url(self.url)
        self.is_sqlite = u.get_backend_name() == "sqlite"
        if images_dir is None:
            env = os.environ.get(IMAGES_ENV)
            if env:
                images_dir = env
            elif self.is_sqlite and u.database and u.database != ":memory:":
                images_dir = Path(u.database).with_suffix(".images")
            else:
                images_dir = DEFAULT_DB.expanduser().with_name("case-images")
        self.images_dir = Path(images_dir).expanduser()
        try:
            if self.is_sqlite and u.database and u.database != ":memory:":
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(self.url, connect_args={"timeout": timeout_s} if self.is_sqlite else {},
                                           future=True)
        except (sa.exc.SQLAlchemyError, OSError, ImportError) as exc:
            raise CaseStoreError(f"the case database cannot be opened: {_one_line(exc)}") from None
        if self.is_sqlite:
            busy_ms = int(timeout_s * 1000)

            @sa.event.listens_for(self.engine, "connect")
            def _on_connect(dbapi_conn, _record):
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
                cur = dbapi_conn.cursor()
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
                cur.close()

            @sa.event.listens_for(self.engine, "begin")
            def _on_begin(conn):
                # take the write lock at the start: two writers then queue (busy_timeout) instead of
                # one failing when it upgrades a read lock
                conn.exec_driver_sql("BEGIN IMMEDIATE")
        self._ensure_schema()

    # -- plumbing ------------------------------------------------------------------------------
    def _tx(self, fn, retries: int = 5):
        """Run fn(connection) in one transaction; database failures become CaseStoreError."""
        for attempt in range(retries):
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except sa.exc.OperationalError as exc:
                if "locked" in _one_line(exc).lower() and attempt < retries - 1:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise _translate(exc) from None
            except sa.exc.DBAPIError as exc:
                raise _translate(exc) from None

    def _ensure_schema(self) -> None:
        def go(conn):
            metadata.create_all(conn)
            row = conn.execute(sa.select(schema_version.c.version)).first()
            if row is None:
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                return
            version = int(row[0])
            if version > SCHEMA_VERSION:
                raise CaseStoreError(f"the case database has schema version {version}, newer than this RealityCheck "
                                     f"understands ({SCHEMA_VERSION}): upgrade RealityCheck")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](conn)
                conn.execute(schema_version.update().values(version=v))

        self._tx(go)

    def _insert_ignore(self, table, values: dict):
        if self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover - other backends: plain insert inside a savepoint-free check
            return table.insert().values(**values)
        return insert(table).values(**values).on_conflict_do_nothing(index_elements=["sha256"])

    # -- writing -------------------------------------------------------------------------------
    def record(self, prediction: Mapping[str, Any], *, data: bytes | None = None, image=None, sha256: str | None = None,
               origin: str, session: str | None = None, model: Mapping[str, Any] | None = None,
               provenance: Mapping[str, Any] | None = None, name: str | None = None,
               store_image: bool | None = None, at: _dt.datetime | None = None) -> str | None:
        """Record one judgement (a `Prediction.to_dict()`); returns the case's sha256, None for a failed prediction.

        `data`: the file's bytes (its hash names the case; its copy is stored when allowed).
        `model`: `model_info(classifier)`. `provenance`: `Provenance.to_dict()` (or the prediction's own).
        """
        if prediction.get("error") or prediction.get("p_fake") is None:
            return None
        if sha256 is None:
            if data is None:
                raise ValueError("record needs the file's bytes (data=) or its sha256")
            sha256 = sha256_of(data)
        keep = self.store_images if store_image is None else store_image
        image_file = None
        if keep and data is not None:
            image_file = self._store_copy(sha256, data, name or prediction.get("path") or "")
        thumb = thumbnail_jpeg(data, image) if (data is not None or image is not None) else None
        prov = dict(provenance or prediction.get("provenance") or {})
        model = dict(model or {})
        at = at or _now()
        display = Path(str(name or prediction.get("path") or "")).name or None
        gen = prediction.get("generator")

        def go(conn):
            conn.execute(self._insert_ignore(cases_table, dict(
                sha256=sha256, name=display, first_seen=at, last_seen=at, thumbnail=thumb, image_file=image_file)))
            updates: dict[str, Any] = {"last_seen": at}
            if display:
                updates["name"] = display
            if thumb is not None:
                updates["thumbnail"] = sa.func.coalesce(cases_table.c.thumbnail, thumb)
            if image_file:
                updates["image_file"] = image_file
            conn.execute(cases_table.update().where(cases_table.c.sha256 == sha256).values(**updates))
            conn.execute(judgements_table.insert().values(
                sha256=sha256, at=at, origin=origin, session=session,
                model_id=model.get("model_id"), model_hash=model.get("model_hash"),
                p_fake=float(prediction["p_fake"]), threshold=_float(prediction.get("threshold")),
                verdict=prediction.get("label"), unfamiliar=prediction.get("unfamiliar"),
                ood_score=_float(prediction.get("ood_score")), faces=prediction.get("faces"),
                generator=json.dumps(gen) if gen is not None else None,
                provenance_kind=prov.get("kind"), provenance=json.dumps(_provenance_summary(prov)) if prov else None,
                prediction=json.dumps({k: v for k, v in prediction.items() if k != "provenance"}, default=str)))
            return sha256

        return self._tx(go)

    def _store_copy(self, sha256: str, data: bytes, name: str) -> str:
        suffix = Path(name).suffix.lower()
        if not suffix or len(suffix) > 6 or not suffix[1:].isalnum():
            suffix = ".img"
        fname = f"{sha256}{suffix}"
        target = self.images_dir / fname
        if not target.exists():
            try:
                self.images_dir.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{fname}.{uuid.uuid4().hex}.tmp")  # one per writer, thread or process
                tmp.write_bytes(data)
                tmp.replace(target)  # two writers of the same bytes: the same file either way
            except OSError as exc:
                raise CaseStoreError(f"the case image folder cannot be written ({exc.strerror or exc})") from None
        return fname

    def label(self, sha256: str, label: str, *, generator: str | None = None, note: str | None = None) -> str:
        """Set a case's true label (real/fake, + generator if known) with a note; returns the full sha256."""
        label = (label or "").strip().lower()
        if label not in LABELS:
            raise ValueError(f"label must be real or fake, not {label!r}")
        full = self.resolve(sha256)
        self._tx(lambda conn: conn.execute(cases_table.update().where(cases_table.c.sha256 == full).values(
            true_label=label, true_generator=(generator or None) if label == "fake" else None,
            note=note, reviewed_at=_now())))
        return full

    def unlabel(self, sha256: str) -> str:
        full = self.resolve(sha256)
        self._tx(lambda conn: conn.execute(cases_table.update().where(cases_table.c.sha256 == full).values(
            true_label=None, true_generator=None, note=None, reviewed_at=None)))
        return full

    def bulk_label(self, folder: str | os.PathLike, *, note: str | None = None) -> dict:
        """Label every case whose file is in a labelled folder (real/ and fake/, or a CSV), matched by sha256.

        Returns counts: labelled, not_a_case (files never judged), unreadable.
        """
        from realitycheck.intake.data import discover

        src = discover(folder)
        by_hash: dict[str, str] = {}
        unreadable = 0
        for path, label in src:
            try:
                by_hash[sha256_of(Path(path).read_bytes())] = label
            except OSError:
                unreadable += 1
        known = set(self._tx(lambda conn: [r[0] for r in conn.execute(
            sa.select(cases_table.c.sha256).where(cases_table.c.sha256.in_(list(by_hash))))]) if by_hash else [])
        now = _now()

        def go(conn):
            for h in known:
                conn.execute(cases_table.update().where(cases_table.c.sha256 == h).values(
                    true_label=by_hash[h], note=note, reviewed_at=now))

        self._tx(go)
        return {"labelled": len(known), "not_a_case": len(by_hash) - len(known), "unreadable": unreadable}

    def delete(self, sha256: str) -> str:
        """Delete a case: its row, every judgement, the thumbnail and the stored image copy."""
        full = self.resolve(sha256)

        def go(conn):
            row = conn.execute(sa.select(cases_table.c.image_file).where(cases_table.c.sha256 == full)).first()
            conn.execute(judgements_table.delete().where(judgements_table.c.sha256 == full))
            conn.execute(cases_table.delete().where(cases_table.c.sha256 == full))
            return row[0] if row else None

        image_file = self._tx(go)
        for f in {image_file, *[p.name for p in self.images_dir.glob(f"{full}.*")]} if self.images_dir.is_dir() else {image_file}:
            if f:
                (self.images_dir / f).unlink(missing_ok=True)
        return full

    # -- reading -------------------------------------------------------------------------------
    def resolve(self, prefix: str) -> str:
        """The full sha256 of the one case starting with `prefix` (at least 6 hex digits)."""
        p = (prefix or "").strip().lower()
        if len(p) < 6 or any(c not in "0123456789abcdef" for c in p):
            raise CaseNotFound(f"{prefix!r}: give a case's sha256 (at least its first 6 hex digits)")
        rows = self._tx(lambda conn: [r[0] for r in conn.execute(
            sa.select(cases_table.c.sha256).where(cases_table.c.sha256.like(p + "%")).limit(2))])
        if not rows:
            raise CaseNotFound(f"no case {p}")
        if len(rows) > 1:
            raise CaseNotFound(f"{p} names more than one case: give more digits")
        return rows[0]

    def cases(self, *, unreviewed: bool = False, disagreements: bool = False, unfamiliar: bool = False,
              declared_ai_said_real: bool = False, reviewed: bool = False, model: str | None = None,
              since: _dt.datetime | str | None = None, until: _dt.datetime | str | None = None,
              sort: str = "last_seen", descending: bool = True, limit: int | None = None,
              thumbnails: bool = False):
        """One row per case with its latest judgement (a pandas DataFrame), filtered and sorted.

        Filters read the latest judgement: `disagreements` = reviewed and the latest verdict differs from
        the true label; `declared_ai_said_real` = the file declares AI generation and the verdict is real;
        `model` matches the latest judgement's model id or hash prefix; `since`/`until` bound the last sighting.
        """
        import pandas as pd

        c, j = cases_table.c, judgements_table.c
        latest = (sa.select(judgements_table.c.sha256, sa.func.max(judgements_table.c.id).label("jid"))
                  .group_by(judgements_table.c.sha256).subquery())
        n = (sa.select(judgements_table.c.sha256, sa.func.count().label("judgements"))
             .group_by(judgements_table.c.sha256).subquery())
        cols = [c.sha256, c.name, c.first_seen, c.last_seen, c.true_label, c.true_generator, c.note, c.reviewed_at,
                (c.image_file.is_not(None)).label("image_stored"), n.c.judgements,
                j.at.label("judged_at"), j.origin, j.model_id, j.model_hash, j.p_fake, j.threshold, j.verdict,
                j.unfamiliar, j.ood_score, j.faces, j.generator, j.provenance_kind]
        if thumbnails:
            cols.append(c.thumbnail)
        q = (sa.select(*cols).select_from(cases_table)
             .join(latest, latest.c.sha256 == c.sha256)
             .join(judgements_table, j.id == latest.c.jid)
             .join(n, n.c.sha256 == c.sha256))
        if unreviewed:
            q = q.where(c.true_label.is_(None))
        if reviewed:
            q = q.where(c.true_label.is_not(None))
        if disagreements:
            q = q.where(c.true_label.is_not(None), c.true_label != j.verdict)
        if unfamiliar:
            q = q.where(j.unfamiliar.is_(True))
        if declared_ai_said_real:
            q = q.where(j.provenance_kind == "ai_generated", j.verdict == "real")
        if model:
            q = q.where(sa.or_(j.model_id == model, j.model_hash.like(model.lower() + "%")))
        if since:
            q = q.where(c.last_seen >= _when(since))
        if until:
            q = q.where(c.last_seen <= _when(until, end=True))
        sortable = {"last_seen": c.last_seen, "first_seen": c.first_seen, "p_fake": j.p_fake, "name": c.name,
                    "judgements": n.c.judgements, "ood_score": j.ood_score, "reviewed_at": c.reviewed_at}
        if sort not in sortable:
            raise ValueError(f"cannot sort by {sort!r}; choose from {', '.join(sortable)}")
        q = q.order_by(sortable[sort].desc() if descending else sortable[sort].asc(), c.sha256)
        if limit:
            q = q.limit(int(limit))
        rows = self._tx(lambda conn: [dict(r._mapping) for r in conn.execute(q)])
        columns = [col.name for col in cols]
        df = pd.DataFrame(rows, columns=columns)
        if not df.empty:
            df["holdout"] = df["sha256"].map(is_holdout)
        else:
            df["holdout"] = pd.Series(dtype=bool)
        return df

    def case(self, sha256: str) -> dict:
        """A case with every judgement (oldest first) and its stored image's path (or None)."""
        full = self.resolve(sha256)

        def go(conn):
            row = dict(conn.execute(sa.select(cases_table).where(cases_table.c.sha256 == full)).first()._mapping)
            js = [dict(r._mapping) for r in conn.execute(
                sa.select(judgements_table).where(judgements_table.c.sha256 == full).order_by(judgements_table.c.id))]
            return row, js

        row, js = self._tx(go)
        for jd in js:
            for key in ("generator", "provenance", "prediction"):
                jd[key] = json.loads(jd[key]) if jd.get(key) else None
        row["judgements"] = js
        row["image_path"] = str(self.images_dir / row["image_file"]) if row.get("image_file") else None
        row["holdout"] = is_holdout(full)
        return row

    def image_path(self, sha256: str) -> Path | None:
        p = self.case(sha256)["image_path"]
        return Path(p) if p and Path(p).is_file() else None

    def reviewed_items(self) -> list[dict]:
        """Every reviewed case with a stored image: sha256, path, true label, generator, holdout flag."""
        rows = self._tx(lambda conn: [dict(r._mapping) for r in conn.execute(
            sa.select(cases_table.c.sha256, cases_table.c.image_file, cases_table.c.true_label,
                      cases_table.c.true_generator).where(cases_table.c.true_label.is_not(None))
            .order_by(cases_table.c.sha256))])
        out = []
        for r in rows:
            path = self.images_dir / r["image_file"] if r["image_file"] else None
            out.append({"sha256": r["sha256"], "path": str(path) if path and path.is_file() else None,
                        "label": r["true_label"], "generator": r["true_generator"],
                        "holdout": is_holdout(r["sha256"])})
        return out

    def count(self) -> int:
        return int(self._tx(lambda conn: conn.execute(sa.select(sa.func.count()).select_from(cases_table)).scalar()))

    def export(self, path: str | os.PathLike, **filters) -> int:
        """Write the case table (latest judgement each, no thumbnails) as CSV or Parquet (by extension)."""
        df = self.cases(**filters)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".parquet":
            df.to_parquet(path, index=False)
        elif path.suffix.lower() == ".csv":
            df.to_csv(path, index=False)
        else:
            raise ValueError(f"{path.name}: export as .csv or .parquet")
        return len(df)

    def dispose(self) -> None:
        self.engine.dispose()


def _float(v) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _when(v, end: bool = False) -> _dt.datetime:
    if isinstance(v, _dt.datetime):
        return v
    try:
        d = _dt.datetime.fromisoformat(str(v))
    except ValueError:
        raise ValueError(f"{v!r}: give a date as YYYY-MM-DD (or an ISO time)") from None
    if end and len(str(v)) <= 10:
        d = d + _dt.timedelta(days=1) - _dt.timedelta(microseconds=1)
    return d.replace(tzinfo=None) if d.tzinfo is None else d.astimezone(_dt.timezone.utc).replace(tzinfo=None)


def _provenance_summary(prov: Mapping[str, Any]) -> dict:
    keep = ("kind", "summary", "generator", "claim", "declares_ai")
    return {k: prov.get(k) for k in keep if prov.get(k) is not None}


# ---------------------------------------------------------------------------------------------
# One call for every front end (CLI, dashboard, HTTP service)
# ---------------------------------------------------------------------------------------------

_model_hashes: dict[tuple[str, int], str] = {}


def model_info(clf) -> dict:
    """The model's id (card name) and hash (sha256 of its checkpoint file, 16 hex digits; cached by mtime)."""
    info = {"model_id": clf.card.name, "model_hash": None}
    path = getattr(clf, "path", None)
    if path and Path(path).is_file():
        st = Path(path).stat()
        key = (str(Path(path).resolve()), st.st_mtime_ns)
        if key not in _model_hashes:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            _model_hashes[key] = h.hexdigest()[:16]
        info["model_hash"] = _model_hashes[key]
    return info


_stores: dict[tuple, CaseStore] = {}


def open_store(public: bool = False, env: Mapping[str, str] | None = None) -> CaseStore | None:
    """The store these settings say to use (one per URL per process), or None when recording is off."""
    s = settings(public, env)
    if not s.enabled:
        return None
    key = (s.url, s.store_images, os.environ.get(IMAGES_ENV))
    if key not in _stores:
        _stores[key] = CaseStore(s.url, store_images=s.store_images)
    return _stores[key]


def record(prediction: Mapping[str, Any], *, source: str, data: bytes | None = None, image=None,
           session: str | None = None, model: Mapping[str, Any] | None = None,
           provenance: Mapping[str, Any] | None = None, name: str | None = None, public: bool = False,
           store: CaseStore | None = None) -> str | None:
    """Record one judgement in this deployment's case database (the function the CLI, the dashboard and
    an HTTP service call). `prediction` is `Prediction.to_dict()`; `source` says where it came from
    ("dashboard:classify", "cli:predict", "api"). Returns the case's sha256; None when recording is off
    or the prediction failed. Raises `CaseStoreError` when the database cannot be used."""
    store = store or open_store(public)
    if store is None:
        return None
    return store.record(prediction, data=data, image=image, origin=source, session=session, model=model,
                        provenance=provenance, name=name)


def record_many(rows: Iterable[tuple[Mapping[str, Any], bytes]], **kwargs) -> int:
    """`record` for many (prediction dict, bytes) pairs; the number recorded."""
    return sum(record(pred, data=data, **kwargs) is not None for pred, data in rows)


__all__ = ["CaseStore", "CaseStoreError", "CaseNotFound", "CaseSettings", "settings", "database_url", "open_store",
           "record", "record_many", "model_info", "is_holdout", "sha256_of", "SCHEMA_VERSION"]


class Recorder:
    """Records judgements as a run goes (CLI `--log`, a server): the first database failure is kept
    (`error`) and recording stops there, so the verdicts themselves are always delivered."""

    def __init__(self, clf, *, source: str, session: str | None = None, public: bool = False,
                 store: CaseStore | None = None):
        self.source, self.session, self.public = source, session, public
        self.model = model_info(clf)
        self._store = store
        self.recorded = 0
        self.skipped: list[str] = []  # inputs whose bytes could not be read back (e.g. remote URIs)
        self.error: CaseStoreError | None = None
        self.off_reason = ""

    def store(self) -> CaseStore | None:
        if self._store is None and self.error is None:
            try:
                self._store = open_store(self.public)
            except CaseStoreError as exc:
                self.error = exc
                return None
            if self._store is None:
                self.off_reason = settings(self.public).reason
        return self._store

    def add(self, prediction, *, data: bytes | None = None, path: str | os.PathLike | None = None,
            provenance: Mapping[str, Any] | None = None) -> str | None:
        """Record a `Prediction` (or its dict); reads the file at `path` (default: its name) when no bytes are given."""
        if self.error is not None:
            return None
        d = prediction.to_dict() if hasattr(prediction, "to_dict") else dict(prediction)
        if d.get("error") or d.get("p_fake") is None:
            return None
        store = self.store()
        if store is None:
            return None
        if data is None:
            try:
                data = Path(path or d.get("path")).read_bytes()
            except (OSError, TypeError, ValueError):
                self.skipped.append(str(path or d.get("path")))
                return None
        try:
            h = store.record(d, data=data, origin=self.source, session=self.session, model=self.model,
                             provenance=provenance, name=str(path or d.get("path") or ""))
        except CaseStoreError as exc:
            self.error = exc
            return None
        self.recorded += h is not None
        return h


def logged(stream, recorder: Recorder):
    """Wrap a `predict_stream(paths, progress=...)` (what `evaluate.evaluate_items` takes) so that every
    Prediction it yields is also recorded: the table and the cases come from the same predictions."""

    def run(paths, progress):
        for pred in stream(paths, progress=progress):
            recorder.add(pred)
            yield pred

    return run
