"""Public mode and path roots: what the dashboard may read, checked through the package and the app.

Package rules (`realitycheck.serving.access`) are tested directly; the dashboard is driven with AppTest,
which runs the app in this process, so a Python audit hook sees every file the app opens or
lists: "no path read" is observed, not inferred from the absence of an error.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from realitycheck.serving import access

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
from tests.helpers import APP_PAGES, jpeg, weights_of_its_own  # noqa: E402

PAGES = APP_PAGES
TIMEOUT = 120
SENTINEL = "rc-secret-outside"  # every file a test plants outside the roots has this in its path


# ---------------------------------------------------------------------------------------------
# observing file access: an audit hook (installed once; it only records while a test watches)
# ---------------------------------------------------------------------------------------------

_SEEN: list | None = None


def _audit(event: str, args) -> None:
    if _SEEN is None or event not in ("open", "os.listdir", "os.scandir"):
        return
    target = args[0] if args else None
    if isinstance(target, (str, bytes, os.PathLike)) and SENTINEL in os.fsdecode(target):
        _SEEN.append((event, os.fsdecode(target)))


sys.addaudithook(_audit)


@pytest.fixture
def watch():
    global _SEEN
    _SEEN = []
    yield _SEEN
    _SEEN = None


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------

def _jpeg(seed: int, size: int = 64) -> bytes:
    return jpeg(seed, size, noisy=True, quality=75)


@pytest.fixture
def places(tmp_path, tiny_checkpoint, monkeypatch):
    """allowed/ (the only root, with a labelled folder), and a planted secret/ outside it."""
    allowed, secret = tmp_path / "allowed", tmp_path / SENTINEL
    for base in (allowed, secret):
        for label in ("real", "fake"):
            (base / "set" / label).mkdir(parents=True)
            for i in range(2):
                (base / "set" / label / f"{label}{i}.jpg").write_bytes(_jpeg(i + (9 if label == "fake" else 0)))
    shutil.copy(tiny_checkpoint, secret / "secret.pt")  # a valid checkpoint: loading it would succeed
    weights = weights_of_its_own(tmp_path, tiny_checkpoint, monkeypatch, roots=allowed)
    return {"allowed": allowed, "secret": secret, "weights": weights}


@pytest.fixture
def public(places, monkeypatch):
    monkeypatch.setenv(access.PUBLIC_ENV, "1")
    return places


def _local(places) -> access.AccessSettings:
    return access.load_settings()


# ---------------------------------------------------------------------------------------------
# package: settings
# ---------------------------------------------------------------------------------------------

def test_settings_env_and_file(places, monkeypatch):
    s = access.load_settings()
    assert not s.public and s.server_paths and places["allowed"] in s.roots and places["weights"] in s.roots
    monkeypatch.setenv(access.PUBLIC_ENV, "1")
    s = access.load_settings()
    assert s.public and s.roots == () and not s.slow_methods and not s.allow_checkpoint_upload
    assert s.classifications_per_minute == 30 and s.session_upload_bytes == 50 * access.MB
    monkeypatch.delenv(access.PUBLIC_ENV)
    (places["allowed"].parent / access.CONFIG_FILE).write_text(
        "[realitycheck]\npublic = true\nclassifications_per_minute = 5\nallow_checkpoint_upload = true\n")
    s = access.load_settings()
    assert s.public and s.classifications_per_minute == 5 and s.allow_checkpoint_upload and not s.slow_methods
    monkeypatch.setenv(access.PUBLIC_ENV, "0")  # the environment wins over the file
    assert not access.load_settings().public


@pytest.mark.parametrize("text, message", [
    ("[realitycheck]\npublic = 'yes'\n", "public must be true or false"),
    ("[realitycheck]\nsecret_backdoor = true\n", "unknown setting 'secret_backdoor'"),
    ("[realitycheck\npublic = true\n", "not valid TOML"),
    ("[realitycheck]\nsession_upload_mb = -1\n", "whole number"),
])
def test_bad_settings_file_fails_closed(places, text, message):
    (places["allowed"].parent / access.CONFIG_FILE).write_text(text)
    with pytest.raises(access.ConfigError, match=message):
        access.load_settings()
    s = access.current()
    assert s.public and message.split()[0] in s.problem


def test_bad_public_env_value(places, monkeypatch):
    monkeypatch.setenv(access.PUBLIC_ENV, "maybe")
    assert access.current().public  # fail closed


# ---------------------------------------------------------------------------------------------
# package: paths
# ---------------------------------------------------------------------------------------------

def test_path_inside_the_roots_is_allowed(places):
    s = _local(places)
    assert access.check_path(places["allowed"] / "set", s, want="dir") == (places["allowed"] / "set").resolve()
    assert access.check_path("allowed/set/real/real0.jpg", s, want="file").name == "real0.jpg"  # relative to cwd


@pytest.mark.parametrize("raw, message", [
    ("/etc/passwd", "outside the folders this dashboard may read"),
    ("", "enter a path first"),
    ("allowed/set/../../" + SENTINEL, "'..' is not allowed"),
    ("allowed/set/real/../real/real0.jpg", "'..' is not allowed"),
    ("allowed/nothing-here", "no such file or folder"),
    ("allowed/x\x00y", "NUL character"),
])
def test_refused_paths(places, raw, message, watch):
    with pytest.raises(access.PathRefused, match=message):
        access.check_path(raw, _local(places))
    assert not watch


def test_missing_outside_is_not_an_existence_oracle(places):
    s = _local(places)
    for raw in ("/etc/passwd", "/etc/no-such-file-here"):
        with pytest.raises(access.PathRefused, match="outside the folders"):
            access.check_path(raw, s)


def test_symlink_out_of_the_roots_is_refused(places, watch):
    link = places["allowed"] / "link-out"
    link.symlink_to(places["secret"], target_is_directory=True)
    with pytest.raises(access.PathRefused, match="symbolic link that leads out"):
        access.check_path(link / "set", _local(places))
    file_link = places["allowed"] / "set" / "real" / "sneaky.jpg"
    file_link.symlink_to(places["secret"] / "set" / "real" / "real0.jpg")
    with pytest.raises(access.PathRefused, match="1 listed file.*symbolic link"):
        access.checked_labelled_source(places["allowed"] / "set", _local(places))
    assert not watch  # refused before anything behind the link was opened


def test_symlink_inside_the_roots_is_fine(places):
    (places["allowed"] / "alias").symlink_to(places["allowed"] / "set", target_is_directory=True)
    src = access.checked_labelled_source("allowed/alias", _local(places))
    assert len(list(src)) == 4


def test_device_and_fifo_are_refused(places, monkeypatch):
    fifo = places["allowed"] / "pipe.jpg"
    os.mkfifo(fifo)
    s = _local(places)
    with pytest.raises(access.PathRefused, match="device or special file"):
        access.check_path(fifo, s)  # never opened (a FIFO would block)
    monkeypatch.setenv(access.ROOTS_ENV, os.pathsep.join([str(places["allowed"]), "/dev"]))
    with pytest.raises(access.PathRefused, match="device or special file"):
        access.check_path("/dev/zero", access.load_settings())


def test_csv_listing_etc_passwd_is_refused(places, watch):
    csv = places["allowed"] / "list.csv"
    csv.write_text(f"path,label\nset/real/real0.jpg,real\n/etc/passwd,fake\n{places['secret']}/set/fake/fake0.jpg,fake\n")
    with pytest.raises(access.PathRefused) as err:
        access.checked_labelled_source(csv, _local(places))
    msg = str(err.value)
    assert msg.startswith("list.csv: 2 listed file(s) may not be read, so nothing was")
    assert "/etc/passwd: outside the folders" in msg and "\n" not in msg
    assert not watch


def test_csv_inside_roots_is_used_as_vetted(places):
    csv = places["allowed"] / "list.csv"
    csv.write_text("path,label\nset/real/real0.jpg,real\nset/fake/fake0.jpg,fake\nset/fake/missing.jpg,fake\n")
    src = access.checked_labelled_source(csv, _local(places))
    assert [(p.name, lab) for p, lab in src] == [("real0.jpg", "real"), ("fake0.jpg", "fake"), ("missing.jpg", "fake")]


def test_public_mode_refuses_every_path(public, watch):
    s = access.load_settings()
    for raw in (public["allowed"] / "set", public["weights"] / "tiny.pt", "/etc/passwd"):
        with pytest.raises(access.PathRefused, match="turned off on this public deployment"):
            access.check_path(raw, s)
    assert not watch


def test_model_allowed(places):
    s = _local(places)
    assert access.model_allowed(places["weights"] / "tiny.pt", s)
    assert not access.model_allowed(places["secret"] / "secret.pt", s)
    assert access.model_allowed(places["secret"] / "secret.pt", s, session_dirs=[places["secret"]])
    assert not access.model_allowed("weights/tiny.pt", s)  # relative: never from session state
    assert not access.model_allowed("/dev/zero", s)


# ---------------------------------------------------------------------------------------------
# package: limits and messages
# ---------------------------------------------------------------------------------------------

def test_rate_check_sliding_window():
    ok, stamps, _ = access.rate_check([], 100.0, limit=3)
    assert ok and stamps == [100.0]
    ok, stamps, _ = access.rate_check([100.0, 101.0], 102.0, limit=3)
    assert ok and len(stamps) == 3
    ok, kept, wait = access.rate_check(stamps, 103.0, limit=3)
    assert not ok and kept == stamps and wait == pytest.approx(57.0)
    ok, _, _ = access.rate_check(stamps, 160.5, limit=3)  # the first stamp has left the window
    assert ok
    ok, _, wait = access.rate_check([], 0.0, limit=3, cost=4)  # more than the limit at once: never
    assert not ok and wait == 60.0
    assert access.rate_check([1.0] * 100, 2.0, limit=0)[0]  # 0: no limit
    assert "limited to 3 classifications per 60 s" in access.rate_message(3, 57.0)


def test_redact_only_in_public_mode():
    msg = "/tmp/realitycheck-model-x1/evil.pt: not a PyTorch weights file (see https://c2pa.org/a/b)"
    assert access.redact(msg, access.AccessSettings(public=False)) == msg
    out = access.redact(msg, access.AccessSettings(public=True))
    assert out == "evil.pt: not a PyTorch weights file (see https://c2pa.org/a/b)"


# ---------------------------------------------------------------------------------------------
# the dashboard
# ---------------------------------------------------------------------------------------------

def _app():
    pytest.importorskip("streamlit.testing.v1")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    return at


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _all_text(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + _errors(at)
    parts += [w.value for w in at.warning] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


PATH_KEYS = ("eval_path", "model_path", "compare_folder")


def test_public_mode_has_no_path_widget_on_any_page(public):
    at = _app()
    at.run()
    assert not at.exception
    assert "Public mode" in _all_text(at)
    for name, page in PAGES.items():
        at.switch_page(page).run()
        assert not at.exception, (name, at.exception)
        assert not at.text_input, (name, [t.key for t in at.text_input])  # the only text inputs were paths
        for radio in at.radio:
            assert not any("server" in str(o).lower() for o in radio.options), (name, radio.options)
        uploads = [u for u in at.get("file_uploader")]
        assert not any("pt" in (u.proto.type or []) for u in uploads), name  # no checkpoint upload
        for cb in at.checkbox:
            assert cb.key != "allow_slow_methods"
    at.switch_page(PAGES["models"]).run()
    text = _all_text(at)
    assert str(public["weights"]) not in text  # no server folder named on the page


def test_crafted_session_state_reads_no_path(public, watch):
    """Every session key that once held a path, planted with one outside: nothing there is opened."""
    secret = public["secret"]
    at = _app()
    at.session_state["eval_source"] = "Folder or CSV on the server"
    at.session_state["eval_path"] = str(secret / "set")
    at.session_state["model_path"] = str(secret / "secret.pt")
    at.session_state["compare_folder"] = str(secret / "set")
    at.session_state["active_model"] = str(secret / "secret.pt")
    at.session_state["extra_models"] = [str(secret / "secret.pt")]
    at.session_state["cam_method"] = "scorecam"
    at.session_state["allow_slow_methods"] = True
    at.run()
    assert not at.exception
    for page in PAGES.values():
        at.switch_page(page).run()
        assert not at.exception, at.exception
    at.switch_page(PAGES["classify"]).run()
    at.file_uploader(key="classify_files").set_value(("a.jpg", _jpeg(1), "image/jpeg"))
    at.button(key="FormSubmitter:classify_form-Classify").click().run()
    assert not at.exception
    assert at.session_state["history"][0]["model"] != "secret"  # classified with the server's model
    assert not any(cb.key == "allow_slow_methods" for cb in at.checkbox)  # slow CAM methods: not offered ...
    assert at.session_state["cam_method"] == "gradcam"  # ... and the planted "scorecam" was replaced
    assert not any("is slow" in w.value for w in at.warning)
    assert not watch, watch


def test_public_rate_limit(public, monkeypatch):
    (public["allowed"].parent / "rc.toml").write_text("[realitycheck]\npublic = true\nclassifications_per_minute = 2\n")
    monkeypatch.setenv(access.CONFIG_ENV, str(public["allowed"].parent / "rc.toml"))
    at = _app()
    at.run()
    at.file_uploader(key="classify_files").set_value([(f"{i}.jpg", _jpeg(20 + i), "image/jpeg") for i in range(3)])
    at.button(key="FormSubmitter:classify_form-Classify").click().run()
    # over the budget: scored up to it, the rest named as left for later (never a retry refused forever)
    assert any("may classify 2 images per 60 s" in e and "2 of these 3 were classified now; 1 was left for later"
               in e for e in _errors(at)), _errors(at)
    assert len(at.session_state["history"]) == 2
    at.file_uploader(key="classify_files").set_value([(f"{i}.jpg", _jpeg(20 + i), "image/jpeg") for i in range(2)])
    at.button(key="FormSubmitter:classify_form-Classify").click().run()
    assert len(at.session_state["history"]) == 2 and not _errors(at)


def test_local_mode_refuses_paths_outside_the_roots(places, watch):
    secret, allowed = places["secret"], places["allowed"]
    (allowed / "link-out").symlink_to(secret, target_is_directory=True)
    (allowed / "list.csv").write_text("path,label\nset/real/real0.jpg,real\n/etc/passwd,fake\n")
    at = _app()
    at.run()
    at.switch_page(PAGES["evaluate"]).run()
    cases = {str(secret / "set"): "outside the folders this dashboard may read",
             str(allowed / "link-out" / "set"): "symbolic link that leads out",
             str(allowed / "list.csv"): "1 listed file(s) may not be read, so nothing was: /etc/passwd: outside"}
    for raw, message in cases.items():
        at.text_input(key="eval_path").set_value(raw)
        at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
        assert not at.exception
        assert any(message in e for e in _errors(at)), (raw, _errors(at))
        assert at.session_state["evaluation"] is None
    at.switch_page(PAGES["models"]).run()
    at.text_input(key="model_path").set_value(str(secret / "secret.pt"))
    at.button(key="FormSubmitter:model_path_form-Load from path").click().run()
    assert any("outside the folders" in e for e in _errors(at)), _errors(at)
    assert not watch, watch
    # and inside the roots it works as before
    at.switch_page(PAGES["evaluate"]).run()
    at.text_input(key="eval_path").set_value(str(allowed / "set"))
    at.button(key="FormSubmitter:eval_folder_form-Evaluate").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert len(at.session_state["evaluation"]["result"].table) == 4


def test_two_sessions_see_nothing_of_each_other(public):
    a, b = _app(), _app()
    a.run()
    b.run()
    a.file_uploader(key="classify_files").set_value(("mine.jpg", _jpeg(3), "image/jpeg"))
    a.button(key="FormSubmitter:classify_form-Classify").click().run()
    a.switch_page(PAGES["evaluate"]).run()
    a.radio(key="eval_source").set_value("Image files upload").run()
    a.file_uploader(key="eval_files_real").set_value([("r.jpg", _jpeg(4), "image/jpeg")])
    a.file_uploader(key="eval_files_fake").set_value([("f.jpg", _jpeg(5), "image/jpeg")])
    a.button(key="FormSubmitter:eval_files_form-Evaluate").click().run()
    assert not a.exception and a.session_state["evaluation"] is not None
    b.run()
    for page in PAGES.values():
        b.switch_page(page).run()
        assert "mine.jpg" not in _all_text(b)
    assert b.session_state["history"] == [] and not b.session_state["predictions"]
    assert b.session_state["evaluation"] is None and b.session_state["uploaded_bytes"] == 0
    a_dirs = {t.name for t in a.session_state["temp_dirs"]}
    assert a_dirs and not a_dirs & {t.name for t in b.session_state["temp_dirs"]}


def test_public_evaluation_shows_no_server_folder(public):
    at = _app()
    at.run()
    at.switch_page(PAGES["evaluate"]).run()
    at.radio(key="eval_source").set_value("Image files upload").run()
    at.file_uploader(key="eval_files_real").set_value([("r.jpg", _jpeg(4), "image/jpeg"),
                                                       ("broken.jpg", b"\xff\xd8\xff junk", "image/jpeg")])
    at.file_uploader(key="eval_files_fake").set_value([("f.jpg", _jpeg(5), "image/jpeg")])
    at.button(key="FormSubmitter:eval_files_form-Evaluate").click().run()
    assert not at.exception, at.exception
    ev = at.session_state["evaluation"]
    root = ev["tmp"].name
    assert any(root in str(p) for p in ev["result"].table["path"])  # the real paths are kept inside ...
    shown = [df.value.to_csv() for df in at.dataframe] + [_all_text(at)]
    assert any("broken.jpg" in s for s in shown)  # ... the failed file is listed ...
    assert not any(root in s or "/tmp" in s for s in shown), shown  # ... without the server folder
    from realitycheck.serving.app import (
        public as P,  # the downloads go through the same function
    )

    out = P.shown_result(ev["result"], root)
    assert not any(root in str(p) for p in out.table["path"]) and root not in out.source
