"""A messy 1,000-image folder: evaluation finishes, reports each failure, survives SIGTERM, resumes.

The folder is generated (32-64 px JPEG/PNG under real/ and fake/): 5% broken files, symlinks
(good and dangling), byte-identical duplicates, and unreadable files when not running as root.
The tiny 96 px checkpoint keeps a full pass at a few seconds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from realitycheck.analysis.evaluate import evaluate_folder, evaluate_items
from tests.helpers import cli_command, cli_env

N_FILES = 1000
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _image_bytes(rng: np.random.Generator, fmt: str) -> bytes:
    w, h = (int(v) for v in rng.integers(32, 65, size=2))
    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 41, size=(h, w, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_messy_folder(root: Path, n: int = N_FILES, seed: int = 0) -> dict:
    """Write `n` files (n >= 60) under root/{real,fake}; return what each file is meant to be."""
    assert n >= 60, "the fixed extras (links, copies, broken) need at least 60 files"
    rng = np.random.default_rng(seed)
    expect: dict[str, str] = {}  # path -> "ok" | reason substring
    good: list[Path] = []
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True, exist_ok=True)
    n_broken = n * 5 // 100
    n_links, n_dangling, n_dupes = 10, 1, 10
    n_unreadable = 0 if IS_ROOT else 5
    n_good = n - n_broken - n_links - n_dangling - n_dupes - n_unreadable
    for i in range(n_good):
        label = "real" if i % 2 == 0 else "fake"
        fmt, ext = ("JPEG", ".jpg") if i % 3 else ("PNG", ".png")
        p = root / label / f"img_{i:04d}{ext}"
        p.write_bytes(_image_bytes(rng, fmt))
        good.append(p)
        expect[str(p)] = "ok"
    for i in range(n_broken):
        label = "real" if i % 2 == 0 else "fake"
        kind = i % 3
        if kind == 0:
            p, data, why = root / label / f"broken_{i:03d}.jpg", _image_bytes(rng, "JPEG")[:150], "truncated"
        elif kind == 1:
            p, data, why = root / label / f"broken_{i:03d}.png", rng.bytes(500), "not an image"
        else:
            p, data, why = root / label / f"broken_{i:03d}.jpg", b"", "empty"
        p.write_bytes(data)
        expect[str(p)] = why
    for i in range(n_links):
        target = good[(100 + i) % len(good)]
        p = target.parent / f"link_{i:02d}{target.suffix}"
        p.symlink_to(target)
        expect[str(p)] = "ok"
    dangling = root / "fake" / "dangling.jpg"
    dangling.symlink_to(root / "fake" / "was_deleted.jpg")
    expect[str(dangling)] = "no such file"
    for i in range(n_dupes):
        src = good[(200 + i) % len(good)]
        p = src.parent / f"copy_of_{src.name}"
        p.write_bytes(src.read_bytes())
        expect[str(p)] = "ok"
    for i in range(n_unreadable):
        p = root / "real" / f"locked_{i}.jpg"
        p.write_bytes(_image_bytes(rng, "JPEG"))
        p.chmod(0)
        expect[str(p)] = "permission denied"
    assert len(expect) == n
    return expect


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "faces"
    expect = make_messy_folder(root)
    # the folder is what the tests below assume (checked here: a fixture, not a feature)
    files = [p for p in root.rglob("*") if not p.is_dir()]
    assert len(files) == N_FILES and sum(p.is_symlink() for p in files) == 11
    assert sum(why != "ok" for why in expect.values()) >= N_FILES * 5 // 100
    yield root, expect
    for p in root.rglob("locked_*"):
        p.chmod(0o600)


@pytest.fixture(scope="module")
def evaluated(messy, tiny_classifier):
    root, _ = messy
    t0 = time.perf_counter()
    result = evaluate_folder(tiny_classifier, root)
    return result, time.perf_counter() - t0


def test_evaluate_folder_completes_with_every_file(evaluated, messy):
    result, seconds = evaluated
    _, expect = messy
    table = result.table
    assert not result.interrupted
    assert len(table) == N_FILES and table["path"].is_unique
    assert set(table["path"]) == set(expect)
    print(f"\nevaluate_folder: {N_FILES} files in {seconds:.1f} s")


def test_every_readable_image_has_a_result(evaluated, messy):
    result, _ = evaluated
    _, expect = messy
    rows = result.table.set_index("path")
    for path, why in expect.items():
        row = rows.loc[path]
        if why == "ok":
            assert row["error"] == "", f"{path}: {row['error']}"
            assert 0.0 <= float(row["p_fake"]) <= 1.0 and row["predicted"] in ("real", "fake")
            assert row["true_label"] == Path(path).parent.name


def test_broken_files_are_listed_with_their_reason(evaluated, messy, tiny_classifier):
    result, _ = evaluated
    _, expect = messy
    summary = result.summary(tiny_classifier.threshold)
    reasons = summary["failed_reasons"]
    bad = {p: why for p, why in expect.items() if why != "ok"}
    assert set(reasons) == set(bad)
    for path, why in bad.items():
        msg = reasons[path]
        assert msg.startswith(path) and why in msg and "\n" not in msg, msg
    assert summary["n_failed"] == len(bad) and summary["n"] == N_FILES - len(bad)
    assert summary["accuracy"] is not None and summary["roc_auc"] is not None


def test_symlinks_and_duplicates_score_like_their_originals(evaluated, messy):
    result, _ = evaluated
    rows = result.table.set_index("path")
    root, expect = messy
    pairs = []
    for p in expect:
        path = Path(p)
        if path.is_symlink() and path.exists():
            pairs.append((p, str(path.resolve())))
        elif path.name.startswith("copy_of_"):
            pairs.append((p, str(path.with_name(path.name[len("copy_of_"):]))))
    assert len(pairs) == 20
    for a, b in pairs:
        assert float(rows.loc[a, "p_fake"]) == pytest.approx(float(rows.loc[b, "p_fake"]), abs=1e-4), (a, b)


# ---------------------------------------------------------------------------------------------
# SIGTERM part-way, then --resume
# ---------------------------------------------------------------------------------------------

def _csv_rows(path: Path) -> int:
    try:
        with open(path, newline="") as fh:
            return max(0, sum(1 for _ in csv.reader(fh)) - 1)
    except FileNotFoundError:
        return 0


def test_cli_sigterm_then_resume(messy, tiny_checkpoint, tmp_path):
    root, expect = messy
    out_csv = tmp_path / "out.csv"
    proc = subprocess.Popen(cli_command("evaluate", root, "--weights", tiny_checkpoint, "--csv", out_csv,
                                        "--batch-size", "16", "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.monotonic() + 240
    while _csv_rows(out_csv) <= 150:
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    assert "interrupted after" in err and "--resume" in err
    partial = pd.read_csv(out_csv)
    n_partial = len(partial)
    assert 150 < n_partial < N_FILES, n_partial
    assert partial["path"].is_unique, "duplicate rows in the partial CSV"
    assert set(partial["path"]) <= set(expect)

    proc2 = subprocess.run(cli_command("evaluate", root, "--weights", tiny_checkpoint, "--csv", out_csv, "--resume",
                                       "--json", "--no-progress"),
                           capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc2.returncode == 1 and "Traceback" not in proc2.stderr, proc2.stderr[-3000:]  # broken files: exit 1
    assert f"resuming: {n_partial} images already in {out_csv}, {N_FILES - n_partial} to go" in proc2.stderr
    full = pd.read_csv(out_csv, keep_default_na=False)
    assert len(full) == N_FILES and full["path"].is_unique
    assert set(full["path"]) == set(expect)
    # the first rows are exactly the partial ones: nothing finished was redone
    assert full["path"].iloc[:n_partial].tolist() == partial["path"].tolist()
    summary = json.loads(proc2.stdout)
    n_bad = sum(why != "ok" for why in expect.values())
    assert summary["n"] + summary["n_failed"] == N_FILES and summary["n_failed"] == n_bad
    for key in ("accuracy", "roc_auc", "balanced_accuracy", "brier"):
        assert summary[key] is not None


def test_interrupt_during_csv_flush_writes_no_duplicates(tmp_path, tiny_classifier, monkeypatch):
    """A SIGTERM that lands while a batch is being flushed must not write that batch twice."""
    import realitycheck.analysis.evaluate as ev

    folder = tmp_path / "f"
    make_messy_folder(folder, n=100, seed=3)
    items = [(p, p.parent.name) for p in sorted((folder / "real").iterdir())]
    real_open = open
    state = {"flushes": 0}

    class InterruptOnSecondFlush:
        def __init__(self, fh):
            self.fh = fh

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def write(self, s):
            return self.fh.write(s)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def flush(self):
            self.fh.flush()
            state["flushes"] += 1
            if state["flushes"] == 2:
                raise KeyboardInterrupt  # what cli._raise_interrupt does on SIGTERM

    def fake_open(path, *a, **kw):
        return InterruptOnSecondFlush(real_open(path, *a, **kw))

    monkeypatch.setattr(ev, "open", fake_open, raising=False)
    out_csv = tmp_path / "partial.csv"
    result = evaluate_items(tiny_classifier, items, csv_path=out_csv, workers=0)
    assert result.interrupted
    written = pd.read_csv(out_csv)
    assert written["path"].is_unique, (
        f"{written['path'].duplicated().sum()} rows written twice after an interrupt during flush")


def test_resume_after_a_torn_last_line(tmp_path, tiny_classifier):
    """kill -9, a crash or a full disk can leave half a row; resume must redo that image, not trust it."""
    folder = tmp_path / "f"
    make_messy_folder(folder, n=80, seed=4)
    items = [(p, p.parent.name) for p in sorted(folder.rglob("img_*"))][:40]
    assert len(items) == 40
    out_csv = tmp_path / "torn.csv"
    evaluate_items(tiny_classifier, items[:20], csv_path=out_csv, workers=0)
    lines = out_csv.read_text().splitlines(keepends=True)
    path, label = lines[-1].split(",")[:2]
    torn = f"{path},{label},"  # the process died right after writing these two fields
    out_csv.write_text("".join(lines[:-1]) + torn)
    result = evaluate_items(tiny_classifier, items, csv_path=out_csv, resume=True, workers=0)
    table = result.table
    assert table["path"].is_unique and len(table) == 40
    assert (table["error"] == "").all() and table["p_fake"].notna().all(), \
        f"image with a torn row was not redone: {table[table['p_fake'].isna()].to_dict('records')}"
    on_disk = pd.read_csv(out_csv, keep_default_na=False)
    assert len(on_disk) == 40 and on_disk["path"].is_unique


@pytest.mark.parametrize("content,why", [
    ("name,score\nx.jpg,1\n", "a CSV from something else"),
], ids=["foreign_csv"])
def test_resume_from_an_unusable_csv_is_a_clear_error(tmp_path, tiny_checkpoint, capsys, content, why):
    """`--resume --csv FILE` with a FILE it cannot use: exit 2 and one line, not a traceback."""
    from realitycheck.serving import cli

    folder = tmp_path / "small"
    make_messy_folder(folder, n=60, seed=5)
    bad = tmp_path / "results.csv"
    bad.write_text(content)
    try:
        code = cli.main(["evaluate", str(folder), "--weights", str(tiny_checkpoint), "--csv", str(bad), "--resume",
                         "--no-progress", "--workers", "0"])
    except BaseException as exc:
        pytest.fail(f"{why}: {type(exc).__name__} escaped realitycheck evaluate --resume: {exc}")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and str(bad) in err.strip().splitlines()[-1]


def test_resume_drops_a_glued_row_and_redoes_it(tmp_path, tiny_checkpoint):
    """A torn line with the next row appended onto it (an older writer, a crash) is dropped and redone."""
    from realitycheck.serving import cli

    folder = tmp_path / "small"
    make_messy_folder(folder, n=60, seed=5)
    first = sorted((folder / "real").iterdir())[0]
    bad = tmp_path / "results.csv"
    bad.write_text("path,true_label,p_fake,predicted,correct,faces,seconds,error\n"
                   f"{first},real,{first},real,0.5,fake,False,1,0.1,\n")
    code = cli.main(["evaluate", str(folder), "--weights", str(tiny_checkpoint), "--csv", str(bad), "--resume",
                     "--no-progress", "--workers", "0"])
    assert code == 1  # the messy folder's broken files failed
    written = pd.read_csv(bad)
    assert written["path"].is_unique and len(written) == sum(1 for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    assert str(first) in set(written["path"])


# ---------------------------------------------------------------------------------------------
# Memory: streaming keeps the peak flat
# ---------------------------------------------------------------------------------------------

RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from realitycheck.analysis.evaluate import evaluate_folder
    from realitycheck.model.inference import Classifier

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024  # MB
    marks = {}
    def progress(done, total):
        for mark in (250, 1000):
            if done >= mark and mark not in marks:
                marks[mark] = {"VmHWM_MB": status("VmHWM"), "VmRSS_MB": status("VmRSS")}
    clf = Classifier.from_file(sys.argv[1])
    marks["after_load"] = {"VmHWM_MB": status("VmHWM"), "VmRSS_MB": status("VmRSS")}
    result = evaluate_folder(clf, sys.argv[2], progress=progress)
    marks["end"] = {"VmHWM_MB": status("VmHWM"), "VmRSS_MB": status("VmRSS"),
                    "children_maxrss_MB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
                    "rows": len(result.table)}
    print(json.dumps(marks))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_peak_memory_is_flat_250_vs_1000(messy, tiny_checkpoint):
    root, _ = messy
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tiny_checkpoint), str(root)],
                          capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\npeak RSS (MB):", json.dumps(marks))
    assert marks["end"]["rows"] == N_FILES
    growth = marks["1000"]["VmHWM_MB"] - marks["250"]["VmHWM_MB"]
    assert growth < 150, f"peak RSS grew {growth} MB from 250 to 1000 images: {marks}"
