"""The dashboard's Cases page (AppTest): a Classify verdict becomes a case; label it, filter, delete; faults and public mode."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from realitycheck.analysis import cases  # noqa: E402
from tests.app_helpers import app_weights, texts  # noqa: E402
from tests.app_helpers import classify as _classify  # noqa: E402
from tests.app_helpers import start_app as _app  # noqa: E402
from tests.helpers import APP_PAGES, save_tiny_checkpoint  # noqa: E402
from tests.helpers import jpeg as _jpeg  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def weights_env(tmp_path_factory):
    with app_weights(save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "test-lite0.pt",
                                          name="test-lite0")) as ckpt:
        yield ckpt


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("REALITYCHECK_DB", str(tmp_path / "cases.db"))
    monkeypatch.delenv("REALITYCHECK_PUBLIC", raising=False)
    return tmp_path / "cases.db"


def _texts(at) -> str:
    return texts(at, "success")


def _table(at: AppTest):
    return next(d.value for d in at.dataframe if "case" in d.value.columns)


def test_classify_then_label_a_case_and_see_it_in_the_filters(db):
    at = _app()
    _classify(at, [("one.jpg", _jpeg(2), "image/jpeg"), ("two.jpg", _jpeg(3), "image/jpeg")])
    store = cases.CaseStore(cases.database_url())
    table = store.cases()
    assert len(table) == 2 and set(table["origin"]) == {"dashboard:classify (upload)"}
    verdict = dict(zip(table["name"], table["verdict"]))
    at.switch_page(APP_PAGES["cases"]).run()
    assert not at.exception and not at.error
    shown = _table(at)
    assert sorted(shown["name"]) == ["one.jpg", "two.jpg"]
    assert str(shown["image"].iloc[0]).startswith("data:image/jpeg;base64,")
    # open one.jpg, label it the opposite of the model's verdict
    sha = table.loc[table["name"] == "one.jpg", "sha256"].iloc[0]
    at.selectbox(key="cases_open_select").set_value(sha).run()
    judgements = next(d.value for d in at.dataframe if "from" in d.value.columns)
    assert list(judgements["from"]) == ["dashboard:classify (upload)"]
    assert not [im for im in at.image if any("Grad-CAM" in c for c in im.captions)]  # heatmap only on demand
    at.button(key=f"case_cam_{sha[:16]}").click().run()
    assert not at.exception and not at.error
    assert [im for im in at.image if any("Grad-CAM of test-lite0" in c for c in im.captions)]
    assert len(at.get("download_button")) == 2  # CSV and Parquet export
    wrong = "real" if verdict["one.jpg"] == "fake" else "fake"
    at.radio(key=f"case_label_value_{sha[:16]}").set_value(wrong)
    at.text_input(key=f"case_label_note_{sha[:16]}").set_value("analyst says so")
    at.button(key=f"FormSubmitter:case_label_{sha[:16]}-Save label").click().run()
    assert not at.exception and not at.error
    assert "labelled" in _texts(at)
    case = store.case(sha)
    assert case["true_label"] == wrong and case["note"] == "analyst says so"
    # the disagreement filter shows exactly that case; "unreviewed" the other one
    at.checkbox(key="cases_disagreements").check().run()
    assert list(_table(at)["name"]) == ["one.jpg"]
    at.checkbox(key="cases_disagreements").uncheck()
    at.checkbox(key="cases_unreviewed").check().run()
    assert list(_table(at)["name"]) == ["two.jpg"]
    at.checkbox(key="cases_unreviewed").uncheck().run()
    # the same image classified again in a new session: one case, two judgements
    b = _app()
    _classify(b, [("one-again.jpg", _jpeg(2), "image/jpeg")])
    assert store.count() == 2 and len(store.case(sha)["judgements"]) == 2
    assert len({j["session"] for j in store.case(sha)["judgements"]}) == 2  # each browser session has its own id


def test_delete_a_case_from_the_page(db):
    at = _app()
    _classify(at, [("gone.jpg", _jpeg(7), "image/jpeg")])
    store = cases.CaseStore(cases.database_url())
    sha = store.cases()["sha256"].iloc[0]
    image = store.case(sha)["image_path"]
    assert image and os.path.exists(image)
    at.switch_page(APP_PAGES["cases"]).run()
    at.selectbox(key="cases_open_select").set_value(sha).run()
    assert at.button(key="case_delete").disabled  # needs the confirmation first
    at.checkbox(key="case_delete_sure").check().run()
    at.button(key="case_delete").click().run()
    assert not at.exception and "deleted" in _texts(at)
    assert store.count() == 0 and not os.path.exists(image)
    assert "No cases yet" in _texts(at)


def test_a_broken_database_still_shows_the_verdict(db):
    db.write_bytes(b"not a database" * 100)
    at = _app()
    _classify(at, [("x.jpg", _jpeg(8), "image/jpeg")])
    errors = [e.value for e in at.error]
    assert any("Not recorded in the case database" in e and "damaged" in e for e in errors), errors
    assert not any(str(db.parent) in e for e in errors)
    assert any(m.value.startswith("<span") and ("FAKE" in m.value or "REAL" in m.value) for m in at.markdown)
    at.switch_page(APP_PAGES["cases"]).run()
    assert not at.exception and any("damaged" in e.value for e in at.error)


def test_public_mode_stores_nothing_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("REALITYCHECK_DB", raising=False)
    monkeypatch.setenv("REALITYCHECK_PUBLIC", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # where the default database would go
    at = _app()
    _classify(at, [("p.jpg", _jpeg(9), "image/jpeg")])
    assert not at.exception and not at.error
    assert not (tmp_path / ".realitycheck").exists()
    at.switch_page(APP_PAGES["cases"]).run()
    assert "off on this deployment" in _texts(at)


def test_models_page_switches_version_and_rolls_back(tmp_path, monkeypatch, weights_env):
    import shutil

    from realitycheck.model import registry
    from realitycheck.model.inference import DEFAULT_WEIGHTS_NAME, default_weights_path

    wdir = tmp_path / "weights"
    wdir.mkdir()
    shutil.copy(weights_env, wdir / DEFAULT_WEIGHTS_NAME)  # the shipped default, named "test-lite0"
    monkeypatch.delenv("REALITYCHECK_WEIGHTS", raising=False)
    monkeypatch.setenv("REALITYCHECK_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("REALITYCHECK_REGISTRY", str(tmp_path / "registry"))
    vid, vdir = registry.new_version_dir()
    save_tiny_checkpoint(vdir / "model.pt", name="learned-one")
    registry.save_version(vdir, {"id": vid, "parent": None, "status": "promoted", "weights": "model.pt"})
    at = _app()
    at.switch_page(APP_PAGES["models"]).run()
    assert not at.exception and not at.error
    assert at.button(key="versions_rollback").disabled  # no version active yet
    at.selectbox(key="versions_choice").set_value(vid)
    at.button(key="versions_use").click().run()
    assert not at.exception and not at.error
    assert default_weights_path() == vdir / "model.pt"
    assert "learned-one" in "\n".join(m.value for m in at.sidebar.markdown)
    at.button(key="versions_rollback").click().run()
    assert not at.exception and not at.error
    assert default_weights_path().resolve() == (wdir / DEFAULT_WEIGHTS_NAME).resolve()
    assert "test-lite0" in "\n".join(m.value for m in at.sidebar.markdown)
    assert "Rolled back" in _texts(at)


def test_public_mode_with_a_database_records_but_shows_no_cases(tmp_path, monkeypatch):
    monkeypatch.setenv("REALITYCHECK_DB", str(tmp_path / "pub.db"))
    monkeypatch.setenv("REALITYCHECK_PUBLIC", "1")
    at = _app()
    _classify(at, [("pub.jpg", _jpeg(12), "image/jpeg")])
    store = cases.CaseStore(cases.database_url())
    assert store.count() == 1 and store.cases()["image_stored"].tolist() == [False]  # no copy of the upload
    at.switch_page(APP_PAGES["cases"]).run()
    assert not at.exception and not at.error
    assert "not shown on this page" in _texts(at)
    assert not at.dataframe and not at.get("download_button")


def test_evaluate_page_verdicts_become_cases(db, tmp_path, monkeypatch):
    from tests.helpers import make_toy_folder

    folder = make_toy_folder(tmp_path / "labelled", side=48, per_class=2)
    monkeypatch.setenv("REALITYCHECK_ROOTS", str(tmp_path))
    at = _app()
    at.switch_page(APP_PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(folder))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception and not at.error
    table = cases.CaseStore(cases.database_url()).cases()
    assert len(table) == 4 and set(table["origin"]) == {"dashboard:evaluate"}
    scored = at.session_state["evaluation"]["result"].table  # the same p_fake on the page and in the cases
    by_name = {p.split("/")[-1]: v for p, v in zip(scored["path"], scored["p_fake"])}
    assert all(by_name[n] == p for n, p in zip(table["name"], table["p_fake"]))
