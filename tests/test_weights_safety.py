"""Weight files are untrusted: loading never runs code, and every bad file gets one clear line.

Each bad file goes through `Classifier.from_file` (CheckpointError naming the file, one line)
and through the CLI `realitycheck predict IMG --weights FILE` (exit 2, one stderr line naming the
file, no traceback): in-process for every case, and as real subprocesses for representative
ones. The original project's bare ResNet50 state_dict must load unchanged and map index 0 to fake.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from realitycheck.model import checkpoints, models
from realitycheck.model.checkpoints import (
    FORMAT,
    CheckpointError,
    ModelCard,
    Preprocessing,
)
from realitycheck.model.inference import Classifier
from realitycheck.serving import cli
from tests.helpers import cli_command, cli_env

# ---------------------------------------------------------------------------------------------
# Hostile pickles. Each payload, if ever unpickled, leaves a sentinel file behind.
# ---------------------------------------------------------------------------------------------

class SystemPayload:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch '{self.sentinel}'",))


class OpenPayload:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (builtins.open, (self.sentinel, "w"))


class EvalPayload:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (builtins.eval, (f"open({self.sentinel!r}, 'w').close()",))


def _lite0_card(**kw) -> ModelCard:
    return ModelCard(name="x", arch="efficientnet_lite0",
                     preprocessing=Preprocessing(resize=96, crop=80, mean=(0.5,) * 3, std=(0.5,) * 3), **kw)


def _rc_file(path: Path, card_json, state_dict, **extra) -> Path:
    """A RealityCheck-format checkpoint with arbitrary (possibly broken) parts."""
    obj = {"format": FORMAT, "format_version": 1, "card": card_json, "state_dict": state_dict}
    obj.update(extra)
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def lite0_sd():
    return models.build_model("efficientnet_lite0", pretrained=False).state_dict()


@pytest.fixture(scope="module")
def sentinel_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sentinels")


# (name, builder(dir, lite0_sd, tiny_checkpoint, sentinel) -> path, expected message substring)
def _bad_files():
    def evil_system(d, sd, tiny, s):
        torch.save({"state_dict": sd, "payload": SystemPayload(s)}, d / "evil_system.pt")
        return d / "evil_system.pt"

    def evil_open(d, sd, tiny, s):
        torch.save({"w": torch.zeros(2), "payload": OpenPayload(s)}, d / "evil_open.pth")
        return d / "evil_open.pth"

    def evil_eval(d, sd, tiny, s):
        torch.save({"w": torch.zeros(2), "payload": EvalPayload(s)}, d / "evil_eval.pth")
        return d / "evil_eval.pth"

    def evil_in_rc_format(d, sd, tiny, s):
        return _rc_file(d / "evil_rc.pt", _lite0_card().to_json(), sd, payload=SystemPayload(s))

    def evil_legacy_pickle(d, sd, tiny, s):
        (d / "evil_legacy.pth").write_bytes(pickle.dumps(SystemPayload(s), protocol=2))
        return d / "evil_legacy.pth"

    def evil_text_pickle(d, sd, tiny, s):
        (d / "evil_p0.pth").write_bytes(pickle.dumps(SystemPayload(s), protocol=0))
        return d / "evil_p0.pth"

    def plain_pickle(d, sd, tiny, s):
        (d / "plain.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
        return d / "plain.pkl"

    def truncated(d, sd, tiny, s):
        data = Path(tiny).read_bytes()
        (d / "truncated.pt").write_bytes(data[: len(data) // 2])
        return d / "truncated.pt"

    def random_bytes(d, sd, tiny, s):
        (d / "random.pt").write_bytes(b"\x13\x37" + os.urandom(4094))
        return d / "random.pt"

    def random_zip(d, sd, tiny, s):
        (d / "notreally.pt").write_bytes(b"PK\x03\x04" + os.urandom(2000))
        return d / "notreally.pt"

    def html(d, sd, tiny, s):
        (d / "model.pth").write_text("<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n")
        return d / "model.pth"

    def empty(d, sd, tiny, s):
        (d / "empty.pt").write_bytes(b"")
        return d / "empty.pt"

    def folder(d, sd, tiny, s):
        (d / "folder.pt").mkdir(exist_ok=True)
        return d / "folder.pt"

    def missing(d, sd, tiny, s):
        return d / "nope.pt"

    def a_tensor(d, sd, tiny, s):
        torch.save(torch.zeros(3), d / "tensor.pt")
        return d / "tensor.pt"

    def not_tensors(d, sd, tiny, s):
        torch.save({"lr": 0.1, "epoch": 3}, d / "hparams.pt")
        return d / "hparams.pt"

    def resnet50_imagenet(d, sd, tiny, s):
        from torchvision.models import resnet50

        torch.save(resnet50(weights=None).state_dict(), d / "resnet50_imagenet.pth")
        return d / "resnet50_imagenet.pth"

    def lite0_three_classes_bare(d, sd, tiny, s):
        m = models.build_model("efficientnet_lite0", num_classes=3)
        torch.save(m.state_dict(), d / "lite0_3cls.pth")
        return d / "lite0_3cls.pth"

    def original_three_classes_bare(d, sd, tiny, s):
        torch.save(models.resnet50(num_classes=3).state_dict(), d / "orig_3cls.pth")
        return d / "orig_3cls.pth"

    def rc_weights_three_outputs(d, sd, tiny, s):
        m = models.build_model("efficientnet_lite0", num_classes=3)
        return _rc_file(d / "rc_3out.pt", _lite0_card().to_json(), m.state_dict())

    def rc_card_three_classes(d, sd, tiny, s):
        m = models.build_model("efficientnet_lite0", num_classes=3)
        return _rc_file(d / "rc_3cls.pt", _lite0_card(classes=["fake", "real", "other"]).to_json(), m.state_dict())

    def arch_mismatch(d, sd, tiny, s):
        card = ModelCard(name="x", arch="resnet50")
        return _rc_file(d / "arch_mismatch.pt", card.to_json(), sd)

    def unknown_arch(d, sd, tiny, s):
        return _rc_file(d / "unknown_arch.pt", json.dumps(dict(json.loads(_lite0_card().to_json()), arch="vit_h14")), sd)

    def newer_format(d, sd, tiny, s):
        return _rc_file(d / "future.pt", _lite0_card().to_json(), sd, format_version=99)

    def damaged_card_json(d, sd, tiny, s):
        text = _lite0_card().to_json()
        return _rc_file(d / "damaged_card.pt", text[: len(text) // 2], sd)

    def card_missing_fields(d, sd, tiny, s):
        return _rc_file(d / "card_empty.pt", "{}", sd)

    def weights_not_tensors(d, sd, tiny, s):
        return _rc_file(d / "rc_sd_bad.pt", _lite0_card().to_json(), {"_fc.weight": [1, 2, 3]})

    return [
        ("evil_os_system", evil_system, "refused: the file contains pickled Python objects"),
        ("evil_builtins_open", evil_open, "refused: the file contains pickled Python objects"),
        ("evil_builtins_eval", evil_eval, "refused: the file contains pickled Python objects"),
        ("evil_inside_realitycheck_format", evil_in_rc_format, "refused: the file contains pickled Python objects"),
        ("evil_legacy_pickle", evil_legacy_pickle, "refused: the file contains pickled Python objects"),
        ("evil_protocol0_pickle", evil_text_pickle, "not a PyTorch weights file (it holds text)"),
        ("plain_pickle", plain_pickle, "pickled Python objects"),
        ("truncated_checkpoint", truncated, "corrupt or truncated"),
        ("random_bytes", random_bytes, "not a PyTorch weights file (it holds unrecognised binary data)"),
        ("random_bytes_zip_magic", random_zip, "corrupt or truncated"),
        ("html_page", html, "an HTML page"),
        ("empty_file", empty, "file is empty"),
        ("folder", folder, "is a folder"),
        ("missing", missing, "no such file"),
        ("a_bare_tensor", a_tensor, "holds a Tensor"),
        ("dict_of_numbers", not_tensors, "not a state_dict"),
        ("resnet50_imagenet_single_fc", resnet50_imagenet, "single-layer fc head of shape (1000, 2048)"),
        ("lite0_bare_3_classes", lite0_three_classes_bare, "matches no known model"),
        ("original_layout_3_classes", original_three_classes_bare, "matches no known model"),
        ("realitycheck_weights_3_outputs", rc_weights_three_outputs, "_fc.weight (3, 1280) != (2, 1280)"),
        ("realitycheck_card_3_classes", rc_card_three_classes, "expected the two classes"),
        ("card_resnet50_weights_lite0", arch_mismatch, "weights do not fit a resnet50"),
        ("card_unknown_arch", unknown_arch, "unknown architecture 'vit_h14'"),
        ("newer_format_version", newer_format, "newer RealityCheck"),
        ("damaged_card_json", damaged_card_json, "damaged card"),
        ("card_missing_fields", card_missing_fields, "damaged card"),
        ("state_dict_values_not_tensors", weights_not_tensors, "damaged card or weights"),
    ]


BAD = _bad_files()
EVIL = [name for name, _, _ in BAD if name.startswith("evil")]


def _damaged_cards():
    """Cards that parse as JSON but hold values no model can use. Each must be a CheckpointError."""
    base = json.loads(_lite0_card().to_json())
    pre = base["preprocessing"]
    return [
        ("card_classes_null", dict(base, classes=None)),
        ("card_arch_not_a_string", dict(base, arch=["efficientnet_lite0"])),
        ("card_format_version_not_int", "FORMAT_VERSION_ABC"),
        ("card_interpolation_unknown", dict(base, preprocessing=dict(pre, interpolation="bogus"))),
        ("card_resize_not_a_number", dict(base, preprocessing=dict(pre, resize="big"))),
        ("card_crop_zero", dict(base, preprocessing=dict(pre, crop=0))),
        ("card_ood_not_a_table", dict(base, ood=[1.5])),
        ("card_ood_threshold_not_a_number", dict(base, ood={"threshold": "high"})),
    ]


DAMAGED = _damaged_cards()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, lite0_sd, tiny_checkpoint, sentinel_dir):
    d = tmp_path_factory.mktemp("bad-weights")
    files = {}
    for name, build, _ in BAD:
        files[name] = build(d, lite0_sd, tiny_checkpoint, sentinel_dir / f"{name}.pwned")
    for name, card in DAMAGED:
        if card == "FORMAT_VERSION_ABC":
            files[name] = _rc_file(d / f"{name}.pt", _lite0_card().to_json(), lite0_sd, format_version="abc")
        else:
            files[name] = _rc_file(d / f"{name}.pt", json.dumps(card), lite0_sd)
    return files


EXPECTED = {name: msg for name, _, msg in BAD}
EXPECTED.update({name: "" for name, _ in DAMAGED})


def _assert_one_line_naming(message: str, path: Path, expected: str):
    assert "\n" not in message.strip(), f"several lines: {message!r}"
    assert message.startswith(str(path)), f"does not start with the file name: {message!r}"
    assert "Traceback" not in message
    assert expected in message, f"expected {expected!r} in {message!r}"


@pytest.fixture
def sigterm_untouched():
    """cli.main changes no process-wide state: the SIGTERM handler belongs to the entry point (cli.run)."""
    old = signal.getsignal(signal.SIGTERM)
    yield
    assert signal.getsignal(signal.SIGTERM) is old


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n, _, _ in BAD] + [n for n, _ in DAMAGED])
def test_api_refuses_bad_weights(bad_files, sentinel_dir, sample_face, name):
    path = bad_files[name]
    try:
        clf = Classifier.from_file(path)
    except CheckpointError as exc:
        _assert_one_line_naming(str(exc), path, EXPECTED[name])
    except Exception as exc:  # anything else reaches the CLI as a traceback
        pytest.fail(f"{path.name}: {type(exc).__name__} instead of CheckpointError: {exc}")
    else:
        # a checkpoint that loads must at least not blow up on a good image
        try:
            pred = clf.predict_one(str(sample_face))
        except Exception as exc:
            pytest.fail(f"{path.name} loaded, then predict raised {type(exc).__name__}: {exc}")
        pytest.fail(f"{path.name} was accepted (prediction {pred.label}); expected a CheckpointError")
    assert list(sentinel_dir.iterdir()) == [], "a payload ran"


@pytest.mark.parametrize("name,callable_names", [
    ("evil_os_system", ("posix.system", "os.system")),
    ("evil_builtins_open", ("io.open", "builtins.open")),
    ("evil_builtins_eval", ("builtins.eval", "eval")),
])
def test_refusal_names_the_real_culprit(bad_files, name, callable_names):
    """If the message says what the file references, it must be the payload, not a torch API."""
    with pytest.raises(CheckpointError) as err:
        checkpoints.read_checkpoint(bad_files[name])
    msg = str(err.value)
    if "it references" in msg:
        named = msg.split("it references ", 1)[1].split(")", 1)[0]
        assert named in callable_names, f"message blames {named!r}; the payload calls {callable_names[0]}"


def test_a_payload_that_runs_under_pickle_is_refused_and_never_runs(tmp_path):
    """The same file: an unsafe torch.load runs its payload (so the payloads are live), while
    RealityCheck's loader refuses it and runs nothing."""
    for cls in (SystemPayload, OpenPayload, EvalPayload):
        path = tmp_path / f"{cls.__name__}.pt"
        unsafe, ours = tmp_path / f"{cls.__name__}.unsafe", tmp_path / f"{cls.__name__}.ours"
        torch.save({"payload": cls(unsafe)}, path)
        torch.load(path, weights_only=False)
        assert unsafe.exists(), cls.__name__
        torch.save({"payload": cls(ours)}, path)
        with pytest.raises(CheckpointError):
            checkpoints.load_checkpoint(path)
        assert not ours.exists(), cls.__name__


def test_read_card_and_info_refuse_too(bad_files, sentinel_dir, capsys, sigterm_untouched):
    """`realitycheck info` reads cards of untrusted files as well."""
    for name in EVIL:
        with pytest.raises(CheckpointError, match=str(bad_files[name])):
            checkpoints.read_card(bad_files[name])
    code = cli.main(["info", *[str(bad_files[n]) for n in EVIL]])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == len(EVIL)
    assert list(sentinel_dir.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n, _, _ in BAD] + [n for n, _ in DAMAGED])
def test_cli_refuses_bad_weights_in_process(bad_files, sentinel_dir, sample_face, capsys, sigterm_untouched, name):
    path = bad_files[name]
    try:
        code = cli.main(["predict", str(sample_face), "--weights", str(path), "--no-progress"])
    except BaseException as exc:  # escaping main() means a traceback for the user
        pytest.fail(f"{type(exc).__name__} escaped realitycheck predict --weights {path.name}: {exc}")
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stdout {out!r}; stderr {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"realitycheck: error: {path}")
    _assert_one_line_naming(lines[0][len("realitycheck: error: "):], path, EXPECTED[name])
    assert out == ""
    assert list(sentinel_dir.iterdir()) == []


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory) -> Path:
    """The original project's layout: bare ResNet50 state_dict, head fc.0/fc.2/fc.4, class 0 = fake."""
    model = models.resnet50(num_classes=2)
    with torch.no_grad():
        model.fc[4].weight.zero_()
        model.fc[4].bias.copy_(torch.tensor([5.0, -5.0]))  # class 0 always wins
    path = tmp_path_factory.mktemp("original") / "RealityCheck.pth"
    torch.save(model.state_dict(), path)
    return path


def test_cli_subprocesses(bad_files, sentinel_dir, sample_face, original_checkpoint):
    """Real processes: a hostile pickle and a damaged card (exit 2); the original weights (exit 0)."""
    runs = {name: bad_files[name] for name in ("evil_os_system", "damaged_card_json")}
    procs = {name: subprocess.Popen(cli_command("predict", sample_face, "--weights", path, "--no-progress"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
             for name, path in runs.items()}
    procs["original"] = subprocess.Popen(
        cli_command("predict", sample_face, "--weights", original_checkpoint, "--json", "--no-progress"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    results = {name: (p, *p.communicate(timeout=300)) for name, p in procs.items()}
    for name, path in runs.items():
        p, out, err = results[name]
        assert p.returncode == 2, (name, p.returncode, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"realitycheck: error: {path}"), err
        assert "Traceback" not in err and out == ""
    p, out, err = results["original"]
    assert p.returncode == 0 and "Traceback" not in err, err
    [pred] = json.loads(out)
    assert pred["label"] == "fake" and pred["p_fake"] > 0.5
    assert list(sentinel_dir.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Good files that must keep loading
# ---------------------------------------------------------------------------------------------

def test_original_layout_loads_unchanged(original_checkpoint, sample_face):
    before = hashlib.sha256(original_checkpoint.read_bytes()).hexdigest()
    clf = Classifier.from_file(original_checkpoint)
    card = clf.card
    assert card.source == "original-reality-check" and card.arch == "resnet50"
    assert card.classes == ["fake", "real"] and clf.fake_index == 0
    assert (card.preprocessing.resize, card.preprocessing.crop) == (232, 224)
    pred = clf.predict_one(str(sample_face))
    assert pred.ok and pred.label == "fake" and pred.p_fake > 0.5
    assert hashlib.sha256(original_checkpoint.read_bytes()).hexdigest() == before  # never rewritten


def test_original_layout_variants_load(tmp_path, original_checkpoint):
    """DataParallel prefixes and {"state_dict": ...} training dumps are the same weights."""
    sd = torch.load(original_checkpoint, weights_only=True)
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "dp.pth")
    torch.save({"state_dict": sd, "epoch": 7}, tmp_path / "dump.pth")
    for name in ("dp.pth", "dump.pth"):
        card = Classifier.from_file(tmp_path / name).card
        assert card.source == "original-reality-check" and card.classes == ["fake", "real"]


def test_tiny_checkpoint_and_half_precision_copy_load(tiny_checkpoint, tmp_path, sample_face):
    clf = Classifier.from_file(tiny_checkpoint)
    assert clf.card.source == "realitycheck" and clf.card.preprocessing.resize == 96
    half = checkpoints.save_checkpoint(tmp_path / "half.pt", clf.model, clf.card, half=True)
    assert half.stat().st_size < tiny_checkpoint.stat().st_size * 0.6
    p_full = clf.predict_one(str(sample_face)).p_fake
    p_half = Classifier.from_file(half).predict_one(str(sample_face)).p_fake
    assert p_half == pytest.approx(p_full, abs=0.02)


# ---------------------------------------------------------------------------------------------
# Initial weights for training go through the same reader
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EVIL))
def test_initial_weights_refuse_hostile_files(bad_files, sentinel_dir, name):
    for arch in ("resnet50", "efficientnet_lite0"):
        with pytest.raises(CheckpointError) as err:
            checkpoints.load_initial_weights(bad_files[name], arch)
        _assert_one_line_naming(str(err.value), bad_files[name], EXPECTED[name])
    assert list(sentinel_dir.iterdir()) == []


def test_initial_weights_from_each_kind_of_file(tmp_path, original_checkpoint, tiny_checkpoint):
    from torchvision.models import resnet50 as tv_resnet50

    torch.manual_seed(0)
    tv = tv_resnet50()  # torchvision's layout: a single fc layer of 1000 classes
    torch.save(tv.state_dict(), tmp_path / "imagenet.pth")
    model, where = checkpoints.load_initial_weights(tmp_path / "imagenet.pth", "resnet50")
    assert where == "ImageNet backbone from imagenet.pth"
    assert torch.equal(model.layer4[2].conv3.weight, tv.layer4[2].conv3.weight)  # backbone kept
    assert model.fc[4].out_features == 2  # the original head, untrained

    model, where = checkpoints.load_initial_weights(original_checkpoint, "resnet50")
    assert where == "original Reality Check weights RealityCheck.pth" and model.fc[4].bias[0] == 5.0
    model, where = checkpoints.load_initial_weights(tiny_checkpoint, "efficientnet_lite0")
    assert where == f"RealityCheck checkpoint {tiny_checkpoint.name}"
    ref, _ = checkpoints.load_checkpoint(tiny_checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    with pytest.raises(CheckpointError, match="holds efficientnet_lite0 weights; expected resnet50"):
        checkpoints.load_initial_weights(tiny_checkpoint, "resnet50")
    with pytest.raises(CheckpointError, match="holds resnet50 weights; expected efficientnet_lite2"):
        checkpoints.load_initial_weights(original_checkpoint, "efficientnet_lite2")
    with pytest.raises(CheckpointError, match="not a ResNet50 backbone"):
        torch.save({"fc.weight": torch.zeros(1000, 2048), "conv9.weight": torch.zeros(1)}, tmp_path / "odd.pth")
        checkpoints.load_initial_weights(tmp_path / "odd.pth", "resnet50")


def test_card_defaults_come_from_the_architecture(tmp_path, lite0_sd):
    for arch, spec in models.ARCHITECTURES.items():
        pre = checkpoints.default_preprocessing(arch, resize=300, crop=260)
        assert (pre.mean, pre.std, pre.resize, pre.crop) == (spec.mean, spec.std, 300, 260)
        assert checkpoints.default_card("x", arch).classes == list(spec.classes)
    assert models.get_arch("resnet50").mean == (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics
    assert models.get_arch("efficientnet_lite2").mean == (0.5, 0.5, 0.5)  # TF-Lite's [-1, 1] scaling
    torch.save(lite0_sd, tmp_path / "bare.pth")  # a bare Lite0 state_dict gets its architecture's defaults
    card = checkpoints.read_card(tmp_path / "bare.pth")
    assert card.arch == "efficientnet_lite0" and card.preprocessing == checkpoints.default_preprocessing(card.arch)
