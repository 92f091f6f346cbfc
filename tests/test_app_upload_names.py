"""Uploads are named as the user knows them: a zip's files by their path inside the zip, a refused
checkpoint by its file name; public mode shows no server path on any page or download. Also the
Evaluate page's per-group table (`groups.group_rates`) on an uploaded zip.

The tiny test checkpoint's verdicts are arbitrary; a threshold of 0.01 makes every verdict FAKE, so
every real photo is a mistake (listed) and the group counts are known by hand.
"""

from __future__ import annotations

import io
import tempfile
import zipfile

import pytest

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

from realitycheck.serving import access  # noqa: E402
from tests.helpers import APP_PAGES, REPO_ROOT, jpeg, weights_of_its_own  # noqa: E402

APP = str(REPO_ROOT / "streamlit_app.py")
TMP = tempfile.gettempdir()
REAL = ["utk_70_1_0_20170101000000001.jpg", "utk_72_0_1_20170101000000002.jpg", "utk_25_1_1_20170101000000003.jpg",
        "aaf_00010A30.jpg"]


def _jpeg(seed: int, size: int = 64) -> bytes:
    return jpeg(seed, size, noisy=True, quality=75)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, n in enumerate(REAL):
            z.writestr(f"my photos/real/{n}", _jpeg(i))
        z.writestr("my photos/fake/f1.jpg", _jpeg(20))
        z.writestr("my photos/fake/broken.jpg", b"\xff\xd8\xff not a jpeg")
    return buf.getvalue()


@pytest.fixture
def local(tmp_path, tiny_checkpoint, monkeypatch):
    weights_of_its_own(tmp_path, tiny_checkpoint, monkeypatch, roots=tmp_path)
    return tmp_path


@pytest.fixture
def public(local, monkeypatch):
    monkeypatch.setenv(access.PUBLIC_ENV, "1")
    return local


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [w.value for w in at.warning] + [i.value for i in at.info] + [t.value for t in at.text]
    parts += [df.value.to_csv() for df in at.dataframe]
    parts += [str(o) for sb in at.selectbox for o in sb.options] + [str(e.label) for e in at.expander]
    return "\n".join(str(p) for p in parts)


def _group_table(at) -> dict:
    df = next(d.value for d in at.dataframe if "attribute" in d.value.columns)
    return {(r["attribute"], r["group"]): r for r in df.to_dict("records")}


def _evaluate_zip(at) -> AppTest:
    at.switch_page(APP_PAGES["evaluate"]).run()
    at.radio(key="eval_source").set_value("Zip file upload").run()
    at.file_uploader(key="eval_zip").set_value(("mine.zip", _zip(), "application/zip"))
    at.button(key="FormSubmitter:eval_zip_form-Evaluate").click().run()
    assert not at.exception, at.exception
    at.slider(key="eval_threshold").set_value(0.01).run()  # every verdict FAKE: every real photo a mistake
    assert not at.exception, at.exception
    return at


def _server_paths(text: str, ev) -> list[str]:
    roots = [TMP, ev["tmp"].name, "realitycheck-eval-", "zip-"]
    return [r for r in roots if r in text]


def test_zip_evaluation_names_files_by_their_path_inside_the_zip(local):
    from realitycheck.serving.app import evaluate_page

    at = _evaluate_zip(AppTest.from_file(APP, default_timeout=120).run())
    ev = at.session_state["evaluation"]
    text = _texts(at)
    for n in REAL:
        assert f"my photos/real/{n}" in text, text  # the mistakes list
    assert "my photos/fake/broken.jpg" in text  # the failed file
    assert not _server_paths(text, ev), _server_paths(text, ev)
    csv = evaluate_page.results_csv(ev, 0.01).decode()
    assert {f"my photos/real/{n}" for n in REAL} | {"my photos/fake/f1.jpg", "my photos/fake/broken.jpg"} == {
        line.split(",")[0].strip('"') for line in csv.splitlines()[1:]}
    assert not _server_paths(csv, ev)
    from realitycheck.model.inference import load_classifier

    html = evaluate_page.report_html(ev, load_classifier(local / "weights" / "tiny.pt"), 0.01).decode()
    assert "my photos/real/" in html and "mine.zip" in html
    assert not _server_paths(html, ev), _server_paths(html, ev)
    assert "data:image/jpeg;base64" in html  # thumbnails still found under the upload


def test_groups_on_the_evaluate_page(local):
    at = _evaluate_zip(AppTest.from_file(APP, default_timeout=120).run())
    rows = _group_table(at)
    # hand count: ages 70, 72, 25, 30 -> 60+: 2, 20-39: 2; women: utk 70 and 25 and aaf serial 10 -> 3
    assert rows[("age band", "60+")]["images"] == 2 and rows[("age band", "20-39")]["images"] == 2
    assert rows[("gender", "female")]["images"] == 3 and rows[("gender", "male")]["images"] == 1
    assert all(r["rate"] == 1.0 for r in rows.values())  # threshold 0.01: every real photo flagged
    csv = ("path,attribute,value\nmy photos/real/aaf_00010A30.jpg,skin tone,V\n"
           "utk_70_1_0_20170101000000001.jpg,skin tone,II\n")
    at.file_uploader(key=f"eval_groups_csv_{at.session_state['evaluation']['id']}").set_value(
        ("tones.csv", csv.encode(), "text/csv")).run()
    assert not at.exception
    rows = _group_table(at)
    assert rows[("skin tone", "V")]["images"] == 1 and rows[("skin tone", "II")]["images"] == 1
    bad = "path,attribute,value\nmy photos/real/aaf_00010A30.jpg,skin tone,\n"
    at.file_uploader(key=f"eval_groups_csv_{at.session_state['evaluation']['id']}").set_value(
        ("bad.csv", bad.encode(), "text/csv")).run()
    assert not at.exception
    assert any("bad.csv: line 2: missing value" in e.value for e in at.error), [e.value for e in at.error]


def test_a_refused_checkpoint_upload_names_the_file_not_its_server_path(local):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page(APP_PAGES["models"]).run()
    at.file_uploader(key="model_upload").set_value(("evil.pt", b"not a checkpoint at all" * 10,
                                                    "application/octet-stream"))
    at.button(key="FormSubmitter:model_upload_form-Load uploaded checkpoint").click().run()
    assert not at.exception
    errors = [e.value for e in at.error] + [t.value for t in at.text]
    assert any("evil.pt" in e for e in errors), errors
    assert not any(TMP in e or "realitycheck-model-" in e for e in errors), errors


def test_public_mode_shows_no_server_path_on_any_page_or_download(public):
    from realitycheck.model.inference import load_classifier
    from realitycheck.serving.app import evaluate_page

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.file_uploader(key="classify_files").set_value([("mine.jpg", _jpeg(3), "image/jpeg"),
                                                     ("junk.jpg", b"junk", "image/jpeg")])
    at.button(key="FormSubmitter:classify_form-Classify").click().run()
    at = _evaluate_zip(at)
    ev = at.session_state["evaluation"]
    for name, page in APP_PAGES.items():
        at.switch_page(page).run()
        assert not at.exception, (name, at.exception)
        text = _texts(at)
        assert not _server_paths(text, ev), (name, _server_paths(text, ev))
        assert str(REPO_ROOT) not in text, name
    downloads = [evaluate_page.results_csv(ev, 0.01).decode(),
                 evaluate_page.report_html(ev, load_classifier(public / "weights" / "tiny.pt"), 0.01).decode()]
    for d in downloads:
        assert not _server_paths(d, ev) and str(public) not in d
