"""The case database: one case per file hash, judgements kept, concurrent writers, delete, faults, public mode."""

from __future__ import annotations

import io
import multiprocessing as mp
import sqlite3

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from realitycheck.analysis import cases
from realitycheck.analysis.cases import CaseStore, CaseStoreError


def _png(seed: int, side: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _pred(p: float, label: str | None = None, **kw) -> dict:
    return {"path": kw.pop("path", "x.png"), "p_fake": p, "label": label or ("fake" if p >= 0.5 else "real"),
            "threshold": 0.5, "faces": 1, "unfamiliar": kw.pop("unfamiliar", False), "ood_score": 1.0, **kw}


@pytest.fixture
def store(tmp_path) -> CaseStore:
    return CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")


def test_same_image_twice_is_one_case_with_two_judgements(store):
    data = _png(1)
    h1 = store.record(_pred(0.9, path="a.png"), data=data, origin="cli:predict", model={"model_id": "m1", "model_hash": "aa"})
    h2 = store.record(_pred(0.2, path="renamed.png"), data=data, origin="dashboard:classify", session="s1",
                      model={"model_id": "m2", "model_hash": "bb"})
    assert h1 == h2 == cases.sha256_of(data)
    table = store.cases()
    assert len(table) == 1 and table.loc[0, "judgements"] == 2
    row = table.iloc[0]
    assert row["name"] == "renamed.png" and row["p_fake"] == 0.2 and row["model_id"] == "m2"  # the latest judgement
    case = store.case(h1[:8])
    assert [j["origin"] for j in case["judgements"]] == ["cli:predict", "dashboard:classify"]
    assert [j["p_fake"] for j in case["judgements"]] == [0.9, 0.2]
    assert case["thumbnail"][:2] == b"\xff\xd8"  # a JPEG thumbnail
    assert open(case["image_path"], "rb").read() == data  # the stored copy is the file itself


def test_failed_predictions_are_not_cases(store):
    assert store.record({"path": "bad.jpg", "error": "not an image", "p_fake": None}, data=b"junk", origin="t") is None
    assert store.count() == 0


def test_generator_guess_and_provenance_are_kept(store):
    gen = {"family": "stable-diffusion", "p": 0.7}
    prov = {"kind": "ai_generated", "summary": "declares AI", "generator": "DALL-E", "notes": ["long"]}
    h = store.record(_pred(0.1, generator=gen), data=_png(2), origin="t", provenance=prov)
    j = store.case(h)["judgements"][0]
    assert j["generator"] == gen
    assert j["provenance_kind"] == "ai_generated" and j["provenance"]["generator"] == "DALL-E"
    assert j["prediction"]["generator"] == gen  # the whole Prediction.to_dict() is kept
    assert list(store.cases(declared_ai_said_real=True)["sha256"]) == [h]


def test_filters_label_and_disagreements(store):
    a = store.record(_pred(0.9), data=_png(10), origin="t", model={"model_id": "m1", "model_hash": "aa11"})
    b = store.record(_pred(0.1, unfamiliar=True), data=_png(11), origin="t", model={"model_id": "m2", "model_hash": "bb22"})
    c = store.record(_pred(0.3), data=_png(12), origin="t", model={"model_id": "m1", "model_hash": "aa11"})
    assert set(store.cases(unreviewed=True)["sha256"]) == {a, b, c}
    store.label(a, "fake", note="agrees")
    store.label(b, "fake", generator="flux", note="missed")
    assert set(store.cases(unreviewed=True)["sha256"]) == {c}
    assert list(store.cases(disagreements=True)["sha256"]) == [b]
    assert list(store.cases(unfamiliar=True)["sha256"]) == [b]
    assert set(store.cases(model="m1")["sha256"]) == {a, c}
    assert set(store.cases(model="bb")["sha256"]) == {b}  # by hash prefix
    assert list(store.cases(sort="p_fake", descending=False)["sha256"]) == [b, c, a]
    case = store.case(b)
    assert (case["true_label"], case["true_generator"], case["note"]) == ("fake", "flux", "missed")
    assert store.cases(since="2000-01-01").shape[0] == 3 and store.cases(until="2000-01-01").empty
    with pytest.raises(ValueError, match="real or fake"):
        store.label(c, "maybe")
    with pytest.raises(cases.CaseNotFound):
        store.label("abcdef0123", "real")


def test_export_csv_and_parquet(store, tmp_path):
    for i in range(3):
        store.record(_pred(0.2 * i), data=_png(20 + i), origin="t")
    assert store.export(tmp_path / "c.csv") == 3
    assert store.export(tmp_path / "c.parquet", unreviewed=True) == 3
    assert len(pd.read_csv(tmp_path / "c.csv")) == 3
    df = pd.read_parquet(tmp_path / "c.parquet")
    assert "thumbnail" not in df and {"sha256", "p_fake", "verdict", "true_label"} <= set(df.columns)


def test_bulk_label_from_a_labelled_folder(store, tmp_path):
    folder = tmp_path / "labelled"
    (folder / "real").mkdir(parents=True)
    (folder / "fake").mkdir()
    r, f, stranger = _png(30), _png(31), _png(32)
    (folder / "real" / "r.png").write_bytes(r)
    (folder / "fake" / "f.png").write_bytes(f)
    (folder / "fake" / "never-judged.png").write_bytes(stranger)
    hr = store.record(_pred(0.9), data=r, origin="t")
    hf = store.record(_pred(0.9), data=f, origin="t")
    counts = store.bulk_label(folder, note="from folder")
    assert counts == {"labelled": 2, "not_a_case": 1, "unreadable": 0}
    assert store.case(hr)["true_label"] == "real" and store.case(hf)["true_label"] == "fake"
    assert store.count() == 2  # a file never judged does not become a case


def test_delete_leaves_no_row_image_or_thumbnail(store):
    data = _png(40)
    h = store.record(_pred(0.7), data=data, origin="t")
    store.record(_pred(0.6), data=data, origin="t")
    image = store.case(h)["image_path"]
    assert image and open(image, "rb").read() == data
    store.delete(h[:10])
    assert store.count() == 0
    with sqlite3.connect(store.engine.url.database) as con:
        assert con.execute("select count(*) from judgements").fetchone()[0] == 0
        assert con.execute("select count(*) from cases").fetchone()[0] == 0
    assert not list(store.images_dir.glob("*"))
    with pytest.raises(cases.CaseNotFound):
        store.case(h)


def _writer(url: str, seeds: list[int], who: str) -> None:
    s = CaseStore(url, timeout_s=60)
    for seed in seeds:
        s.record(_pred(0.5), data=_png(seed), origin=who, session=who)


def test_two_writers_at_once_lose_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    CaseStore(url)  # schema created once before the race (as a deployment's first start would)
    shared = list(range(100, 110))  # both writers judge these ten images too: one case, two judgements each
    a = list(range(200, 240)) + shared
    b = list(range(300, 340)) + shared
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, a, "A")), ctx.Process(target=_writer, args=(url, b, "B"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    s = CaseStore(url)
    table = s.cases()
    assert len(table) == 40 + 40 + 10
    assert int(table["judgements"].sum()) == len(a) + len(b)
    assert set(table[table["judgements"] == 2]["sha256"]) == {cases.sha256_of(_png(x)) for x in shared}


def test_corrupt_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "cases.db"
    bad.write_bytes(b"this is not a database at all, just text" * 200)
    with pytest.raises(CaseStoreError, match="damaged or is not a database") as err:
        CaseStore(f"sqlite:///{bad}")
    assert str(tmp_path) not in str(err.value)  # no server path in the message


def test_locked_database_is_a_clear_error(tmp_path):
    path = tmp_path / "cases.db"
    store = CaseStore(f"sqlite:///{path}", timeout_s=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
    try:
        with pytest.raises(CaseStoreError, match="locked"):
            store.record(_pred(0.5), data=_png(50), origin="t")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.record(_pred(0.5), data=_png(50), origin="t")  # works again once the lock is gone


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "cases.db"
    CaseStore(f"sqlite:///{path}")
    with sqlite3.connect(path) as con:
        con.execute("update schema_version set version = 99")
    with pytest.raises(CaseStoreError, match="schema version 99"):
        CaseStore(f"sqlite:///{path}")


def test_database_location_from_the_environment(tmp_path):
    assert cases.database_url({}).endswith("/.realitycheck/cases.db")
    assert cases.database_url({"REALITYCHECK_DB": str(tmp_path / "x.db")}) == f"sqlite:///{tmp_path / 'x.db'}"
    assert cases.database_url({"REALITYCHECK_DB": "postgresql://team@db/cases"}) == "postgresql://team@db/cases"


def test_public_mode_stores_nothing_by_default(tmp_path):
    s = cases.settings(public=True, env={})
    assert not s.enabled and "REALITYCHECK_DB" in s.reason
    assert cases.open_store(public=True, env={}) is None
    # with a database configured, judgements are kept but the uploads themselves are not
    env = {"REALITYCHECK_DB": str(tmp_path / "pub.db")}
    s = cases.settings(public=True, env=env)
    assert s.enabled and not s.store_images
    store = CaseStore(s.url, store_images=s.store_images)
    h = store.record(_pred(0.4), data=_png(60), origin="dashboard:classify")
    assert store.case(h)["image_path"] is None and not store.images_dir.exists()
    assert cases.settings(public=True, env={**env, "REALITYCHECK_STORE_UPLOADS": "1"}).store_images
    # locally: on, with copies, unless turned off
    assert cases.settings(env={}).enabled and cases.settings(env={}).store_images
    assert not cases.settings(env={"REALITYCHECK_CASES": "0"}).enabled


def test_holdout_is_a_fixed_share_by_hash():
    hashes = [cases.sha256_of(str(i).encode()) for i in range(2000)]
    share = np.mean([cases.is_holdout(h) for h in hashes])
    assert 0.17 < share < 0.23
    assert all(cases.is_holdout(h) == cases.is_holdout(h) for h in hashes[:50])


def test_a_server_url_without_its_driver_is_a_clear_error():
    # psycopg2 is not a dependency: a team installs it with its PostgreSQL
    try:
        import psycopg2  # noqa: F401
        pytest.skip("psycopg2 is installed here")
    except ImportError:
        pass
    with pytest.raises(CaseStoreError, match="cannot be opened"):
        CaseStore("postgresql://team@db.invalid/cases")


def test_threads_sharing_one_store_lose_nothing(store):
    """Dashboard sessions are threads of one server process sharing one CaseStore."""
    import threading

    errors = []

    def work(k: int) -> None:
        try:
            for i in range(15):
                store.record(_pred(0.5), data=_png(1000 + (i if i < 5 else 100 * k + i)), origin=f"thread {k}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    table = store.cases()
    assert len(table) == 5 + 4 * 10 and int(table["judgements"].sum()) == 4 * 15
