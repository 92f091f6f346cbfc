"""Command-line front door: predict, explain, evaluate, train, export, video, serve, info, cases, learn, models.

Exit codes: 0 all succeeded; 1 some inputs failed (each is reported); 2 usage, data or weights
errors. User errors print one clear line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from realitycheck.training.train_config import ARCH_NAMES as ARCHS  # noqa: F401  (torch-free; ARCHS: tests)
from realitycheck.training.train_config import add_train_arguments

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """An error caused by the input or the environment, printed as one line."""


def _err(msg: str) -> None:
    print(f"realitycheck: error: {msg}", file=sys.stderr)


def _progress_bar(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr,
                disable=None if enabled else True, mininterval=0.5)  # None: only on a terminal


def _failure_line(name: str, error: str) -> str:
    """One tab-separated failure line naming the file once (errors often start with "NAME: " already)."""
    return f"{name}\tERROR\t{str(error).removeprefix(f'{name}: ')}"


def _threshold_arg(text: str) -> float:
    """--threshold as argparse checks it: a number in [0, 1] (inference.check_threshold), else a usage error."""
    from realitycheck.model.inference import ThresholdError, check_threshold

    try:
        return check_threshold(text)
    except ThresholdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load(args, **kwargs):
    from realitycheck.model.checkpoints import CheckpointError
    from realitycheck.model.inference import NoWeightsError, load_classifier

    try:
        clf = load_classifier(args.weights, threshold=getattr(args, "threshold", None),
                              batch_size=getattr(args, "batch_size", 16),
                              precision=getattr(args, "precision", "auto"),
                              crop_face=getattr(args, "crop_face", False),
                              engine=getattr(args, "engine", "auto"), views=getattr(args, "views", "auto"),
                              **kwargs)
    except (CheckpointError, NoWeightsError) as exc:
        raise UserError(str(exc)) from None
    if clf.engine_note:
        print(f"realitycheck: note: {clf.engine_note}", file=sys.stderr)
    return clf


def _expand_inputs(paths: list[str]) -> list[str]:
    """Files as given; folders expanded to the images inside (recursively, sorted)."""
    from realitycheck.intake.data import walk_images

    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = [str(x) for x in walk_images(path)]
            if not found:
                print(f"realitycheck: warning: {p}: folder holds no images", file=sys.stderr)
            out += found
        else:
            out.append(p)  # missing / unreadable files are reported per item by the classifier
    return out


# ---------------------------------------------------------------------------------------------

def _ray_pipeline(args) -> dict:
    """The --ray options as `distributed` keyword arguments."""
    return {"address": args.ray_address, "actors": args.ray_actors, "gpus_per_actor": args.ray_gpus_per_actor}


def cmd_predict(args) -> int:
    from realitycheck.intake.provenance import KIND_WORDS, disagreement, read_provenance
    from realitycheck.model.attribution import generator_words
    from realitycheck.serving.records import prediction_record

    if args.ray:  # a listing file (one path or URI a line) is an input list, as Ray reads it
        from realitycheck.serving.distributed import read_listing

        args.paths = [x for p in args.paths
                      for x in (read_listing(p) if p.endswith((".txt", ".lst")) and Path(p).is_file() else [p])]
    inputs = _expand_inputs(args.paths)
    if not inputs:
        raise UserError("no images to predict")
    meaning = None
    if args.prevalence is not None:  # checked before the model loads: a typo costs no time
        from realitycheck.analysis import prevalence as P

        try:
            share = P.check_prevalence(args.prevalence)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    clf = _load(args)
    if args.prevalence is not None:
        meaning = P.reliability(P.rates_from_card(clf.card), share)
    bar = _progress_bar(len(inputs), "predict", args.progress and len(inputs) > 1)
    results = []
    if args.ray:
        from realitycheck.serving import distributed

        try:
            results = list(distributed.iter_predict(clf, inputs, progress=lambda d, t: bar.update(d - bar.n),
                                                    **_ray_pipeline(args)))
        except distributed.RayUnavailableError as exc:
            raise UserError(str(exc)) from None
    else:
        for pred in clf.iter_predict(inputs, workers=0 if len(inputs) < 2 * clf.batch_size else None,
                                     progress=lambda d, t: bar.update(d - bar.n)):
            results.append(pred)
    bar.close()
    # what each file declares about its origin: shown beside the verdict, never mixed into p_fake
    declared = [r.provenance or read_provenance(path) for r, path in zip(results, inputs)]
    if args.json:  # the same record as the HTTP API's (records.prediction_record)
        print(json.dumps([{**prediction_record(r, provenance=p),
                           **({"at_prevalence": _meaning_dict(meaning, r, clf.threshold)} if meaning else {})}
                          for r, p in zip(results, declared)], indent=2))
    else:
        for r, p in zip(results, declared):
            if r.ok:
                extra = f"  [{r.face_message}]" if r.faces == 0 or len(r.face_p_fake) > 1 else ""
                if len(r.face_p_fake) > 1:
                    extra += "  faces p_fake: " + ", ".join(f"{p:.3f}" for p in r.face_p_fake)
                if r.unfamiliar:
                    extra += f"  [UNFAMILIAR (score {r.ood_score:.2f}): this verdict is unreliable]"
                if r.label == "fake" and r.generator:
                    extra += f"  [{generator_words(r.generator)}]"
                note = f"  ({'; '.join(r.notes)})" if r.notes else ""
                said = f"\tprovenance: {KIND_WORDS[p.kind]}" if p.kind != "none" else ""
                print(f"{r.name}\t{r.label}\tp_fake={r.p_fake:.3f}\t{r.seconds * 1000:.0f} ms{extra}{note}{said}")
                clash = disagreement(p, r.label)
                if clash:
                    print(f"  NOTE: {clash}")
                if meaning:
                    print(f"  {_meaning_dict(meaning, r, clf.threshold)['words']}")
            else:
                print(_failure_line(r.name, r.error))
    # recorded after the verdicts are printed: a slow or broken database never hides them
    sys.stdout.flush()
    recorder = _recorder(clf, "cli:predict") if args.log else None
    if recorder:
        for r, p, path in zip(results, declared, inputs):
            recorder.add(r, path=path, provenance=p.to_dict())
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"realitycheck: {failed} of {len(results)} inputs failed", file=sys.stderr)
    if recorder and not _report_recorder(recorder):
        return EXIT_SOME_FAILED
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _meaning_dict(meaning, pred, threshold: float) -> dict | None:
    """What this verdict means at the prevalence given (`prevalence.verdict_meaning`), for JSON and text."""
    from realitycheck.analysis import prevalence as P

    if not pred.ok:
        return None
    right = meaning.fake_right if pred.label == "fake" else meaning.real_right
    rates = meaning.rates
    return {"prevalence": meaning.prevalence, "verdict_right": right,
            "fake_verdict_right": meaning.fake_right, "real_verdict_right": meaning.real_right,
            "detection_rate": rates.detection if rates else None,
            "false_alarm_rate": rates.false_alarm if rates else None,
            "words": P.verdict_meaning(meaning, pred.label, threshold)}
def _recorder(clf, source: str):
    """A case recorder for `--log` (the database: $REALITYCHECK_DB, default ~/.realitycheck/cases.db)."""
    from realitycheck.analysis.cases import Recorder

    return Recorder(clf, source=source, session=f"cli pid {os.getpid()}")


def _report_recorder(recorder) -> bool:
    """Say what `--log` recorded; False when the case database failed (the verdicts were still printed)."""
    if recorder.error is not None:
        _err(f"not logged: {recorder.error}")
        return False
    if recorder.off_reason:
        print(f"realitycheck: note: --log: case recording is off ({recorder.off_reason})", file=sys.stderr)
        return True
    extra = f"; {len(recorder.skipped)} inputs not readable here were not logged" if recorder.skipped else ""
    print(f"realitycheck: logged {recorder.recorded} judgements in the case database{extra}", file=sys.stderr)
    return True


def cmd_explain(args) -> int:
    from realitycheck import explain
    from realitycheck.intake.images import ImageError, load_image

    if args.method not in explain.METHODS:
        raise UserError(f"unknown method {args.method!r}; choose from {', '.join(explain.METHODS)}")
    clf = _load(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = _expand_inputs(args.images)
    if not inputs:
        raise UserError("no images to explain")
    records, failed = [], 0
    explainer = explain.Explainer(clf.model, clf.card)  # one private copy of the model for all inputs
    for src in inputs:
        try:
            loaded = load_image(src)
        except ImageError as exc:
            records.append({"path": src, "error": str(exc)})
            failed += 1
            continue
        pred = clf.predict_one(loaded)  # the verdict, and the face that decided it: the one explained
        if not pred.ok:
            records.append({"path": src, "error": pred.error})
            failed += 1
            continue
        exp = explainer.explain([loaded.image], method=args.method, target_class=args.target_class,
                                batch_size=args.batch_size, progress=None if args.progress else False,
                                face=pred.deciding_face)[0]
        panel = explain.render_panel(exp.region_image, exp.heatmap, opacity=args.opacity)  # original | overlay + bar
        png = out / f"{Path(src).stem}.{args.method}.png"
        panel.save(png)
        f = exp.faithfulness
        records.append({
            "path": src, "label": pred.label, "p_fake": pred.p_fake, "method": args.method,
            "explained_class": exp.target_class, "region": exp.region, "overlay": str(png),
            "faithfulness": None if f is None else {"drop_hot": f.drop_hot, "drop_random": f.drop_random,
                                                    "score": f.score, "meaning": f.meaning},
            "where": exp.where(loaded.image),
            "seconds": exp.seconds,
        })
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for r in records:
            if "error" in r:
                print(_failure_line(r["path"], r["error"]))
                continue
            print(f"{r['path']}\t{r['label']}\tp_fake={r['p_fake']:.3f}\t{r['method']} of {r['explained_class']}"
                  f" -> {r['overlay']}")
            if r["faithfulness"]:
                print(f"  faithfulness: {r['faithfulness']['meaning']}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_evaluate(args) -> int:
    from realitycheck.analysis import evaluate
    from realitycheck.intake.data import DataError

    clf = _load(args)
    common = dict(csv_path=args.csv, resume=args.resume, progress=args.progress, workers=args.workers,
                  log=lambda m: print(m, file=sys.stderr))
    ray_errors: tuple = ()
    if args.ray:  # the same evaluation, with the images scored on Ray Data
        from realitycheck.serving import distributed

        common["predict_stream"] = distributed.predict_stream(clf, **_ray_pipeline(args))
        ray_errors = (distributed.RayUnavailableError,)
    recorder = None
    if args.log:  # every judgement becomes a case, through the same Prediction the table is built from
        from realitycheck.analysis.cases import logged

        recorder = _recorder(clf, "cli:evaluate")
        inner = common.get("predict_stream") or (
            lambda paths, progress: clf.iter_predict(paths, workers=args.workers, progress=progress))
        common["predict_stream"] = logged(inner, recorder)
    sources = list(args.folder or []) + list(args.data or [])
    if not sources:
        raise UserError("nothing to evaluate: give a folder, a CSV, NAME=FOLDER or a .toml manifest (--data)")
    try:
        if len(sources) == 1 and not args.only_split and not args.data and not str(sources[0]).endswith(".toml"):
            result = evaluate.evaluate_folder(clf, sources[0], split=args.split, **common)
        else:
            result = evaluate.evaluate_sources(clf, sources, only_split=args.only_split, **common)
    except (DataError, evaluate.ResumeError, *ray_errors) as exc:
        raise UserError(str(exc)) from None
    if args.parquet:
        Path(args.parquet).parent.mkdir(parents=True, exist_ok=True)
        result.table.to_parquet(args.parquet, index=False)
    if result.interrupted:
        print(f"realitycheck: interrupted after {len(result.table)} images; partial results in {args.csv}; "
              "rerun with --resume to continue", file=sys.stderr)
        if recorder:
            _report_recorder(recorder)
        return EXIT_SOME_FAILED
    summary = result.summary(threshold=clf.threshold)
    if args.robustness:
        summary["robustness"] = evaluate.robustness_sweep(clf, sources[0], split=args.split,
                                                          threshold=clf.threshold, progress=args.progress).to_dict("records")
    groups = None
    if args.groups:  # rates per age band / gender / ethnicity (file names or a CSV of path,attribute,value)
        from realitycheck.analysis import groups as G

        try:
            attrs = G.attributes_for(result.table["path"], csv_path=None if args.groups == "names" else args.groups)
            groups = G.group_rates(result.table, attrs, clf.threshold,
                                   only=[a.strip() for a in args.group_by.split(",") if a.strip()] if args.group_by else None)
        except G.GroupError as exc:
            raise UserError(str(exc)) from None
        summary["groups"] = groups.to_dict(orient="records")
    if args.report:
        evaluate.write_report(args.report, clf, result, threshold=clf.threshold,
                              robustness=summary.get("robustness"), groups=groups)
        print(f"report written to {args.report}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        print(evaluate.format_summary(summary))
        if groups is not None:
            from realitycheck.analysis import groups as G

            print(G.format_table(groups))
    failed = int(summary.get("n_failed") or 0)
    if failed:  # the metrics stand, but some inputs were not scored: the same code as predict's
        print(f"realitycheck: {failed} of {len(result.table)} inputs failed", file=sys.stderr)
    if recorder and not _report_recorder(recorder):
        return EXIT_SOME_FAILED
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_train(args) -> int:
    from realitycheck.intake.data import DataError
    from realitycheck.model.checkpoints import CheckpointError
    from realitycheck.training.train import config_from_args, fit

    cfg = config_from_args(args)
    try:
        fit(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (DataError, FileNotFoundError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    return EXIT_OK


def cmd_attribute(args) -> int:
    from realitycheck.intake.data import DataError
    from realitycheck.model.checkpoints import CheckpointError
    from realitycheck.training.train import attach_attribution

    try:
        path = attach_attribution(args.weights, args.data, out=args.out, workers=args.workers,
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
    except (DataError, FileNotFoundError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {path}")
    return EXIT_OK


def _export_command(args) -> str:
    """The command line that reproduces this export (recorded in the engine card)."""
    import shlex

    parts = ["realitycheck", "export", args.weights, "--engine", args.engine]
    parts += ["--int8"] if args.int8 else []
    parts += [x for c in args.calibration or [] for x in ("--calibration", c)]
    parts += ["--calibration-images", str(args.calibration_images)] if args.int8 else []
    parts += ["--int8-distill", "--distill-images", str(args.distill_images), "--distill-epochs",
              str(args.distill_epochs)] if args.int8_distill else []
    parts += [x for c in args.check or [] for x in ("--check", c)]
    parts += ["--check-limit", str(args.check_limit)] if args.check_limit else []
    parts += ["--out", args.out] if args.out else []
    parts += ["--prune"] if args.prune else []
    return " ".join(map(shlex.quote, parts))


def _int8_distiller(args):
    """export's int8_weights for --int8-distill (None without it)."""
    if not args.int8_distill:
        return None
    from realitycheck.training.int8_distill import DistillSettings, distiller

    return distiller(args.calibration, images=args.distill_images,
                     settings=DistillSettings(epochs=args.distill_epochs),
                     log=lambda m: print(m, file=sys.stderr, flush=True))


def cmd_export(args) -> int:
    if not Path(args.weights).is_file():
        raise UserError(f"{args.weights}: no such file")
    if args.int8 and not args.calibration:
        raise UserError("--int8 needs --calibration FOLDER (its training-split images calibrate the INT8 model)")
    if args.int8_distill and not args.int8:
        raise UserError("--int8-distill trains the weights an INT8 graph is made from: add --int8")
    from realitycheck.intake.data import DataError
    from realitycheck.model import export
    from realitycheck.model.checkpoints import CheckpointError
    from realitycheck.model.engines import GRAPH_ENGINES

    try:
        manifest = export.export(
            args.weights, out_dir=args.out, engines=GRAPH_ENGINES if args.engine == "all" else [args.engine],
            int8=args.int8, calibration=args.calibration or [], calibration_images=args.calibration_images,
            check=args.check or [], check_limit=args.check_limit, prune=args.prune,
            command=_export_command(args), int8_weights=_int8_distiller(args),
            log=lambda m: print(m, file=sys.stderr, flush=True))
    except (CheckpointError, DataError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(manifest, indent=2, default=float))
    else:
        print(export.engines_markdown(manifest))
    return EXIT_OK


def cmd_threshold(args) -> int:
    from realitycheck.analysis.thresholds import write_thresholds
    from realitycheck.model.checkpoints import CheckpointError

    for path in (args.weights, args.val_csv, args.test_csv):
        if path and not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    try:
        card, rows = write_thresholds(args.weights, args.val_csv, args.max_false_alarm, test_csv=args.test_csv)
    except (CheckpointError, ValueError, KeyError) as exc:  # KeyError: a CSV without the evaluate columns
        raise UserError(f"{args.val_csv}: {exc}" if isinstance(exc, KeyError) else str(exc)) from None
    print(f"threshold {card.threshold} written to {args.weights}")
    print(rows.to_string(index=False))
    return EXIT_OK


def add_threshold_command(subparsers) -> None:
    """`realitycheck threshold CKPT VAL_CSV`: the release thresholds, chosen on validation, into the card."""
    p = subparsers.add_parser("threshold", help="choose a checkpoint's decision and unfamiliar-image thresholds on "
                                                "its validation results and write them into its card")
    p.add_argument("weights", help="checkpoint file (rewritten in place)")
    p.add_argument("val_csv", help="its per-image validation results: realitycheck evaluate --only-split val --csv")
    p.add_argument("--max-false-alarm", type=float, default=0.05,
                   help="at most this share of every real validation source called fake, and of every source "
                        "flagged unfamiliar (default 0.05)")
    p.add_argument("--test-csv", help="its per-image test results, re-scored at the chosen threshold for the card "
                                      "(never used to choose)")
    p.set_defaults(func=cmd_threshold)


def cmd_views(args) -> int:
    from realitycheck.analysis.view_rule import check_view_rule, write_view_rule
    from realitycheck.intake.data import DataError
    from realitycheck.model.checkpoints import CheckpointError, read_card
    from realitycheck.model.export import labelled_files, training_seed

    if not Path(args.weights).is_file():
        raise UserError(f"{args.weights}: no such file")
    try:
        seed = training_seed(read_card(args.weights))
        items = labelled_files(args.data, "val", seed)
        if not items:
            raise UserError(f"{', '.join(args.data)}: no validation images (the hash split of seed {seed})")
        card, rows = write_view_rule(args.weights, items, target=args.target, workers=args.workers,
                                     log=lambda m: print(m, file=sys.stderr))
    except (CheckpointError, DataError, ValueError) as exc:
        raise UserError(str(exc)) from None
    v = card.views
    print(f"mirror margin {v['mirror_margin']} written to {args.weights}: {v['mirrored_share']:.1%} of the "
          f"validation views get their mirror image; verdicts agree with two views on every source at >= "
          f"{args.target:.1%}; {_dauc_words(v['abs_dauc'])}")
    print(rows[["source", "images", "agreement", "mirrored_share"]].to_string(index=False))
    if args.test:
        rows, dauc = check_view_rule(args.weights, labelled_files(args.data, "test", seed), workers=args.workers)
        print(f"held-out test split ({int(rows['images'].sum())} images; never used to choose): "
              f"{rows['mirrored'].sum() / rows['views'].sum():.1%} of the views mirrored; {_dauc_words(dauc)}")
        print(rows[["source", "images", "agreement", "mirrored_share"]].to_string(index=False))
    return EXIT_OK


def _agreement_share(text: str) -> float:
    """--target: a share of images, above 0 and at most 1 (argparse's type: a clear usage error)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a share such as 0.995") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share of images; give one above 0 and at most 1, "
                                         "such as 0.995") from None
    return v


def _dauc_words(dauc: float | None) -> str:
    return "ROC-AUC not defined (one class)" if dauc is None else f"|ROC-AUC change| {dauc:.4f}"


def add_views_command(subparsers) -> None:
    """`realitycheck views CKPT --data M`: the mirror-view margin, chosen on validation, into the card."""
    p = subparsers.add_parser("views", help="choose on validation where a checkpoint's mirror view can be skipped "
                                            "(the margin around the threshold) and write it into its card")
    p.add_argument("weights", help="checkpoint file (rewritten in place; weights and thresholds unchanged)")
    p.add_argument("--data", action="append", required=True, metavar="SOURCE",
                   help="labelled sources (a manifest, folders, NAME=FOLDER); their validation split is used")
    p.add_argument("--target", type=_agreement_share, default=0.995,
                   help="verdicts must agree with every view mirrored on at least this share of every source "
                        "(default 0.995)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per spare core)")
    p.add_argument("--test", action="store_true",
                   help="then score the test split at the chosen margin and print its agreement (never used to choose)")
    p.set_defaults(func=cmd_views)


def cmd_info(args) -> int:
    from realitycheck.model.checkpoints import CheckpointError, card_markdown, read_card
    from realitycheck.model.inference import default_weights_path, list_weights

    paths = [Path(p) for p in args.weights] if args.weights else list_weights()
    if not paths:
        print(f"no weights found (default location {default_weights_path()})")
        return EXIT_OK
    status = EXIT_OK
    for p in paths:
        try:
            card = read_card(p)
        except CheckpointError as exc:
            _err(str(exc))
            status = EXIT_SOME_FAILED
            continue
        if args.json:
            print(card.to_json())
        else:
            print(card_markdown(card, p.name))
    return status


def cmd_video(args) -> int:
    """Sampled frames of a video file -> per-frame, per-face p_fake and one verdict by a stated rule."""
    from realitycheck.serving import video

    clf = _load(args)
    bar = _progress_bar(None, "frames", args.progress)
    try:
        result, frames = video.analyse_video(clf, args.file, every_s=args.every_s, every_k=args.every_k,
                                             max_frames=args.max_frames, top=args.top,
                                             progress=lambda n: bar.update(n - bar.n))
    except video.VideoError as exc:
        raise UserError(str(exc)) from None
    finally:
        bar.close()
    out = result.to_dict()
    if args.heatmaps:  # Grad-CAM of the most suspicious frames (the deciding face of each)
        from realitycheck import explain
        from realitycheck.model.views import deciding

        folder = Path(args.heatmaps)
        folder.mkdir(parents=True, exist_ok=True)
        explainer = explain.Explainer(clf.model, clf.card)
        out["heatmaps"] = []
        for k in result.suspicious:
            fr = result.frames[k]
            face = deciding(fr.face_p_fake) if fr.face_p_fake else None  # the face the frame's verdict came from
            exp = explainer.explain([frames[fr.frame]], method="gradcam", target_class="fake", progress=False,
                                    face=face)[0]
            png = folder / f"{Path(args.file).stem}.frame{fr.frame:06d}.gradcam.png"
            exp.panel(caption=f"frame {fr.frame} ({fr.time_s:.2f} s): p_fake {fr.p_fake:.3f}").save(png)
            out["heatmaps"].append({"frame": fr.frame, "png": str(png), "where": exp.where(frames[fr.frame])})
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        result.table().to_csv(args.csv, index=False)
    if args.plot:
        video.timeline_figure(result).write_html(args.plot, include_plotlyjs=True)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
    else:
        for f in result.frames:
            faces = ", ".join(f"{p:.3f}" for p in f.face_p_fake)
            print(f"frame {f.frame}\t{f.time_s:7.2f} s\t" + (f"ERROR\t{f.error}" if f.error else
                  f"{f.label}\tp_fake={f.p_fake:.3f}" + (f"\tfaces: {faces}" if len(f.face_p_fake) > 1 else "")))
        top = ", ".join(f"frame {result.frames[k].frame} ({result.frames[k].p_fake:.3f})" for k in result.suspicious)
        print(f"most suspicious: {top}")
        print(f"VIDEO\t{result.label}\tp_fake={result.p_fake:.3f}\t({result.rule}; {len(result.frames)} frames, "
              f"{result.sampling})")
        for n in result.notes:
            print(f"  note: {n}")
    return EXIT_SOME_FAILED if any(f.error for f in result.frames) else EXIT_OK


def cmd_serve(args) -> int:
    """The HTTP API (realitycheck.serving.api): in this process, or on Ray Serve replicas with --ray."""
    if args.hash_key:  # print what the settings store for a key read from stdin (the key never hits argv)
        from realitycheck.serving.api.config import hash_key

        key = sys.stdin.readline().strip()
        if not key:
            raise UserError("--hash-key reads the key from standard input; it was empty")
        print(hash_key(key))
        return EXIT_OK
    from realitycheck.serving.access import ConfigError
    from realitycheck.serving.api.config import (
        ServeConfigError,
        check_exposure,
        load_serve_settings,
    )

    try:
        workers = args.workers
        if workers is None and args.ray:  # let @serve.batch fill every replica's batch from concurrent requests
            workers = max(1, args.replicas) * max(1, args.max_batch_size)
        settings = load_serve_settings(host=args.host, port=args.port, workers=workers, queue=args.queue,
                                       max_body_bytes=args.max_body_mb * 1024 * 1024 if args.max_body_mb else None,
                                       rate_per_minute=args.rate_per_minute,
                                       allow_anonymous=True if args.allow_anonymous else None,
                                       slow_methods=True if args.allow_slow_methods else None)
    except (ServeConfigError, ConfigError) as exc:
        raise UserError(str(exc)) from None
    if args.allow_slow_methods and settings.access.public:
        raise UserError("--allow-slow-methods is not allowed in public mode")
    problem = check_exposure(settings)
    if problem:
        raise UserError(problem)
    if args.weights and not Path(args.weights).is_file():
        raise UserError(f"{args.weights}: no such file")

    def load():
        return _load(args)

    if args.ray:
        from realitycheck.serving.api import ray_app

        try:
            ray_app.run(settings, weights=args.weights, engine=args.engine, replicas=args.replicas,
                        address=args.ray_address, max_batch_size=args.max_batch_size)
        except ray_app.RayServeUnavailableError as exc:
            raise UserError(str(exc)) from None
        return EXIT_OK
    from realitycheck.serving.api.server import run_local

    print(f"realitycheck: serving on http://{settings.host}:{settings.port} (API docs at /docs)", file=sys.stderr)
    try:
        run_local(settings, load, log_level=args.log_level)
    except KeyboardInterrupt:  # uvicorn re-raises the SIGTERM/Ctrl-C it handled: the shutdown was clean
        pass
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# cases: review what was judged (the case database)
# ---------------------------------------------------------------------------------------------

CASE_LIST_COLUMNS = ["sha256", "name", "last_seen", "judgements", "verdict", "p_fake", "unfamiliar", "model_id",
                     "true_label", "true_generator", "provenance_kind"]


def _case_store():
    from realitycheck.analysis.cases import CaseStore, CaseStoreError, database_url

    try:
        return CaseStore(database_url())
    except CaseStoreError as exc:
        raise UserError(str(exc)) from None


def _case_filters(args) -> dict:
    return dict(unreviewed=args.unreviewed, reviewed=args.reviewed, disagreements=args.disagreements,
                unfamiliar=args.unfamiliar, declared_ai_said_real=args.declared_ai_said_real, model=args.model,
                since=args.since, until=args.until)


def cmd_cases(args) -> int:
    from realitycheck.analysis.cases import CaseNotFound, CaseStoreError
    from realitycheck.intake.data import DataError

    store = _case_store()
    try:
        return _cases_action(store, args)
    except (CaseStoreError, CaseNotFound, DataError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _cases_action(store, args) -> int:
    if args.action == "list":
        df = store.cases(**_case_filters(args), sort=args.sort, descending=not args.ascending, limit=args.limit)
        if args.json:
            records = [{k: (None if v is None or (isinstance(v, float) and v != v) else v) for k, v in r.items()}
                       for r in df.to_dict("records")]
            print(json.dumps(records, indent=2, default=str))  # p_fake to full precision
            return EXIT_OK
        if df.empty:
            print("no cases match" if store.count() else "no cases yet: judge images with `predict --log`, "
                  "`evaluate --log` or the dashboard")
            return EXIT_OK
        view = df[CASE_LIST_COLUMNS].copy()
        view["sha256"] = view["sha256"].str[:12]
        view["last_seen"] = view["last_seen"].astype(str).str[:19]
        view["p_fake"] = view["p_fake"].map(lambda v: f"{v:.3f}")
        print(view.fillna("").to_string(index=False))
        return EXIT_OK
    if args.action == "show":
        case = store.case(args.sha)
        case.pop("thumbnail", None)
        if args.json:
            print(json.dumps(case, indent=2, default=str))
            return EXIT_OK
        print(f"case {case['sha256']}  ({case['name']})")
        print(f"  first seen {case['first_seen']:%Y-%m-%d %H:%M:%S}, last seen {case['last_seen']:%Y-%m-%d %H:%M:%S}; "
              f"image {'stored' if case['image_path'] else 'not stored'}; {'holdout' if case['holdout'] else 'training'} share")
        truth = case["true_label"] or "not reviewed"
        if case["true_generator"]:
            truth += f" ({case['true_generator']})"
        print(f"  true label: {truth}" + (f"; note: {case['note']}" if case["note"] else ""))
        for j in case["judgements"]:
            gen = f"  generator {j['generator']}" if j["generator"] else ""
            unf = "  UNFAMILIAR" if j["unfamiliar"] else ""
            print(f"  {j['at']:%Y-%m-%d %H:%M:%S}  {j['origin']:<20} {j['model_id'] or '?'} ({j['model_hash'] or '?'})  "
                  f"{j['verdict']} p_fake={j['p_fake']:.3f} @ {j['threshold'] if j['threshold'] is None else format(j['threshold'], '.4g')}{unf}{gen}"
                  + (f"  declares: {j['provenance_kind']}" if j["provenance_kind"] not in (None, "none") else ""))
        return EXIT_OK
    if args.action == "label":
        if args.from_folder:
            counts = store.bulk_label(args.from_folder, note=args.note)
            print(f"labelled {counts['labelled']} cases from {args.from_folder}; {counts['not_a_case']} files there "
                  f"were never judged; {counts['unreadable']} unreadable")
            return EXIT_OK
        if not args.sha or not args.label:
            raise UserError("cases label SHA real|fake [--generator G] [--note TEXT], or cases label --from FOLDER")
        full = store.label(args.sha, args.label, generator=args.generator, note=args.note)
        print(f"case {full[:12]}: labelled {args.label}" + (f" ({args.generator})" if args.generator else ""))
        return EXIT_OK
    if args.action == "export":
        n = store.export(args.out, **_case_filters(args))
        print(f"exported {n} cases to {args.out}")
        return EXIT_OK
    if args.action == "delete":
        for sha in args.sha:
            full = store.delete(sha)
            print(f"deleted case {full[:12]}: its judgements, thumbnail and stored image are gone")
        return EXIT_OK
    raise UserError(f"unknown cases action {args.action!r}")


# ---------------------------------------------------------------------------------------------
# learn (from reviewed cases) and the model registry
# ---------------------------------------------------------------------------------------------

def cmd_learn(args) -> int:
    from realitycheck.analysis.cases import CaseStoreError
    from realitycheck.intake.data import DataError
    from realitycheck.model.checkpoints import CheckpointError
    from realitycheck.model.registry import RegistryError
    from realitycheck.training import learn

    opts = learn.LearnOptions(epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, batch_size=args.batch_size,
                              cases_share=args.cases_share, replay=list(args.replay or []), workers=args.workers,
                              seed=args.seed, precision=args.precision, half=args.half, promote=not args.no_promote)
    store = _case_store()
    try:
        meta = learn.learn(store, args.weights, opts, log=lambda m: print(m, file=sys.stderr, flush=True),
                           command=learn.command_line(getattr(args, "argv", None) or ["learn"]))
    except (learn.LearnError, CaseStoreError, CheckpointError, DataError, RegistryError, FileNotFoundError,
            ValueError) as exc:  # (train's "not enough images to make train and validation splits" is a ValueError)
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(meta, indent=2, default=str))
    else:
        print(f"{meta['id']} ({meta['status']}), parent {meta['parent']}")
        print(learn.gate_markdown(meta["gate"]))
    return EXIT_OK


def cmd_models(args) -> int:
    from realitycheck.model import registry
    from realitycheck.model.inference import default_weights_path

    try:
        if args.action == "list":
            active = registry.active()
            rows = registry.versions()
            if args.json:
                print(json.dumps([{**v, "active": bool(active and v["id"] == active["id"])} for v in rows],
                                 indent=2, default=str))
                return EXIT_OK
            if not rows:
                print(f"no model versions yet (registry: {registry.registry_dir()}); `realitycheck learn` makes them")
                return EXIT_OK
            for v in rows:
                mark = "*" if active and v["id"] == active["id"] else " "
                g = v.get("gate") or {}
                h = g.get("holdout") or {}
                extra = (f"  holdout {h['current_accuracy']:.1%} -> {h['candidate_accuracy']:.1%} (n={h['n']})"
                         if h.get("n") else "")
                print(f"{mark} {v['id']}  {v['status']:<9} parent {v.get('parent') or '-':<5} "
                      f"{len(v.get('cases_used') or [])} cases  {v.get('created', '')}{extra}")
            print(f"active: {active['id'] if active else 'none (the shipped default)'}; default model file: "
                  f"{default_weights_path()}")
            return EXIT_OK
        if args.action == "use":
            v = registry.use(args.version, base_path=default_weights_path())
            print(f"{v['id']} is now the active model ({registry.weights_of(v)})")
            return EXIT_OK
        if args.action == "rollback":
            v = registry.rollback()
            print(f"rolled back: {v['id']} is the active model again ({registry.weights_of(v)})")
            return EXIT_OK
    except registry.RegistryError as exc:
        raise UserError(str(exc)) from None
    raise UserError(f"unknown models action {args.action!r}")


# ---------------------------------------------------------------------------------------------
# the parser: one function per subcommand, and the option groups several of them share
# ---------------------------------------------------------------------------------------------

def _ray_opts(p: argparse.ArgumentParser) -> None:
    """--ray and its pipeline options (`_ray_pipeline` reads them), for predict and evaluate."""
    p.add_argument("--ray", action="store_true", help="run on Ray Data: a local Ray, or the cluster at --ray-address")
    p.add_argument("--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--ray-actors", type=int, default=1, help="model actors, each loads the checkpoint once (default 1)")
    p.add_argument("--ray-gpus-per-actor", type=float, default=0.0, help="GPUs reserved per model actor (default 0)")


def _weights_opts(p: argparse.ArgumentParser) -> None:
    """Which checkpoint, at which threshold, with or without progress bars."""
    p.add_argument("--weights", help="checkpoint file (default: the shipped model in weights/)")
    p.add_argument("--threshold", type=_threshold_arg, default=None,
                   help="decision threshold on p_fake (default: the one in the model's card, 0.5 unless it says)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _log_opt(p: argparse.ArgumentParser) -> None:
    """--log: every judgement into the case database."""
    p.add_argument("--log", action="store_true",
                   help="record every judgement in the case database ($REALITYCHECK_DB, default "
                        "~/.realitycheck/cases.db) for review: `realitycheck cases`")


def _engine_opt(p: argparse.ArgumentParser) -> None:
    """--engine: what runs the forward pass."""
    p.add_argument("--engine", choices=["auto", "torch", "onnxruntime", "openvino"], default="auto",
                   help="what runs the forward pass (auto: the engine the model's export chose by measurement, "
                        "else PyTorch; --precision applies to PyTorch only); decoding, face check and "
                        "thresholds are the same for all")
    p.add_argument("--views", choices=["auto", "all"], default="auto",
                   help="auto: the mirror view only where it could change the verdict (the card's margin around "
                        "the threshold, chosen on validation); all: every view and its mirror image, as before")


def _add_predict(sub) -> None:
    """predict: real or AI-generated, per image (cmd_predict)."""
    p = sub.add_parser("predict", help="classify images and folders")
    p.add_argument("paths", nargs="+", help="image files and/or folders")
    _weights_opts(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto (= fp32): the same p_fake as explain, evaluate and the dashboard; "
                        "bf16: faster batches on CPUs with bf16, p_fake differs by up to ~0.03")
    p.add_argument("--crop-face", action="store_true", help="classify the largest detected face only")
    p.add_argument("--prevalence", metavar="P",
                   help="share of fakes among the photos you check (0.001, 0.1%% or 1/1000): each verdict then "
                        "says how often a verdict like it is right there, from the model card's measured rates")
    _log_opt(p)
    _ray_opts(p)
    _engine_opt(p)
    p.set_defaults(func=cmd_predict)


def _add_explain(sub) -> None:
    """explain: heatmap PNGs (cmd_explain)."""
    p = sub.add_parser("explain", help="write Grad-CAM family heatmaps for images")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True, help="folder for the overlay PNGs")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--class", dest="target_class", choices=["fake", "real"], help="class to explain (default: predicted)")
    p.add_argument("--opacity", type=float, default=0.45)
    p.add_argument("--batch-size", type=int, default=32, help="masked forwards per batch for scorecam/ablationcam")
    p.add_argument("--json", action="store_true")
    _weights_opts(p)
    _engine_opt(p)
    p.set_defaults(func=cmd_explain)


def _add_evaluate(sub) -> None:
    """evaluate: metrics on labelled data (cmd_evaluate)."""
    p = sub.add_parser("evaluate", help="measure a model on a labelled folder (real/ and fake/ subfolders)")
    p.add_argument("folder", nargs="*", help="folder with real/ and fake/, the Kaggle 140k layout, or a CSV of path,label")
    p.add_argument("--data", action="append", default=[],
                   help="another labelled source: FOLDER, NAME=FOLDER or a .toml manifest (repeatable); "
                        "results and metrics are reported per source")
    p.add_argument("--only-split", choices=["train", "val", "test"],
                   help="keep only the images of this hash split (the one `train` uses), e.g. the held-out test share")
    p.add_argument("--groups", nargs="?", const="names", metavar="CSV",
                   help="false-alarm and detection rates per group (age band, gender, ethnicity) with 95%% intervals: "
                        "from file names (UTKFace, All-Age-Faces) or, with CSV, from rows of path,attribute,value")
    p.add_argument("--group-by", metavar="ATTR[,ATTR]", help="with --groups: only these attributes (e.g. 'age band,gender')")
    _weights_opts(p)
    p.add_argument("--split", help="for the Kaggle layout: train, valid or test (default test)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", help="write the per-image table here (also the resume file)")
    p.add_argument("--resume", action="store_true", help="skip images already in --csv")
    p.add_argument("--report", help="write a self-contained HTML report")
    p.add_argument("--robustness", action="store_true", help="also evaluate under JPEG, downscale and blur")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: from the cores)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--parquet", help="also write the per-image table as Parquet (same columns as --csv)")
    _log_opt(p)
    _ray_opts(p)
    _engine_opt(p)
    p.set_defaults(func=cmd_evaluate)


def _add_train(sub) -> None:
    """train: every option from train_config.TrainConfig (cmd_train)."""
    p = sub.add_parser("train", help="train or fine-tune a detector on labelled sources")
    add_train_arguments(p)  # every option comes from train_config.TrainConfig
    p.set_defaults(func=cmd_train)


def _add_attribute(sub) -> None:
    """attribute: fit a checkpoint's generator-attribution head (cmd_attribute)."""
    p = sub.add_parser("attribute", help="fit the generator-attribution head of a checkpoint on its training sources")
    p.add_argument("weights", help="checkpoint file (rewritten in place unless --out)")
    p.add_argument("--data", action="append", required=True,
                   help="the labelled sources it was trained on (manifest .toml whose fake sources name a `family`)")
    p.add_argument("--out", help="write the checkpoint with its head here instead")
    p.add_argument("--workers", type=int, default=1, help="decoding processes")
    p.set_defaults(func=cmd_attribute)


def _add_export(sub) -> None:
    """export: engine files for a checkpoint (cmd_export)."""
    p = sub.add_parser("export", help="export a checkpoint to ONNX Runtime / OpenVINO (INT8 gated on agreement)")
    p.add_argument("weights", help="checkpoint file; engine files go to NAME.engines/ beside it")
    p.add_argument("--engine", choices=["all", "onnxruntime", "openvino"], default="all")
    p.add_argument("--int8", action="store_true", help="also calibrate a static INT8 model (needs --calibration)")
    p.add_argument("--calibration", action="append", help="labelled data as --data takes it (folder, NAME=FOLDER or manifest .toml); only its "
                        "training-split images are used, split as train splits them (repeatable)")
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--int8-distill", action="store_true",
                   help="with --int8: first fine-tune a copy of the model, quantization simulated, to give this model's "
                        "fp32 answers (no labels; training-split images of --calibration), and quantize that copy")
    p.add_argument("--distill-images", type=int, default=2000, help="training-split images --int8-distill learns from")
    p.add_argument("--distill-epochs", type=int, default=3)
    p.add_argument("--check", action="append",
                   help="labelled data (folder, NAME=FOLDER or manifest) whose validation-split images gate each engine against fp32 PyTorch, overall and "
                        "per source (repeatable); without it only fp32 graphs are accepted")
    p.add_argument("--check-limit", type=int, help="at most N validation images per source")
    p.add_argument("--out", help="folder for the engine files (default: NAME.engines/ beside the checkpoint)")
    p.add_argument("--prune", action="store_true", help="keep only the files the chosen default engine needs")
    p.add_argument("--json", action="store_true", help="print the engine card as JSON")
    p.set_defaults(func=cmd_export)


def _case_filter_opts(q: argparse.ArgumentParser) -> None:
    """The filters `cases list` and `cases export` share (`_case_filters` reads them)."""
    q.add_argument("--unreviewed", action="store_true", help="no true label yet")
    q.add_argument("--reviewed", action="store_true", help="with a true label")
    q.add_argument("--disagreements", action="store_true", help="the latest verdict differs from the true label")
    q.add_argument("--unfamiliar", action="store_true", help="the latest judgement flagged the image unfamiliar")
    q.add_argument("--declared-ai-said-real", action="store_true",
                   help="the file declares AI generation but the model said real")
    q.add_argument("--model", help="the latest judgement's model id (card name) or model hash prefix")
    q.add_argument("--since", help="last seen on or after this date (YYYY-MM-DD)")
    q.add_argument("--until", help="last seen on or before this date (YYYY-MM-DD)")


def _add_cases(sub) -> None:
    """cases and its actions: the case database (cmd_cases)."""
    p = sub.add_parser("cases", help="review judged images: list, show, label, export, delete (the case database)")
    csub = p.add_subparsers(dest="action", required=True)
    q = csub.add_parser("list", help="one row per case with its latest judgement")
    _case_filter_opts(q)
    q.add_argument("--sort", default="last_seen",
                   choices=["last_seen", "first_seen", "p_fake", "name", "judgements", "ood_score", "reviewed_at"])
    q.add_argument("--ascending", action="store_true")
    q.add_argument("--limit", type=int)
    q.add_argument("--json", action="store_true")
    q = csub.add_parser("show", help="a case and every judgement of it")
    q.add_argument("sha", help="the case's sha256 (or its first 6+ hex digits)")
    q.add_argument("--json", action="store_true")
    q = csub.add_parser("label", help="set the true label of a case, or of every case found in a labelled folder")
    q.add_argument("sha", nargs="?", help="the case's sha256 (or its first 6+ hex digits)")
    q.add_argument("label", nargs="?", choices=["real", "fake"])
    q.add_argument("--generator", help="for fakes: the generator, if known")
    q.add_argument("--note", help="why (kept with the label)")
    q.add_argument("--from", dest="from_folder", metavar="FOLDER",
                   help="bulk: a labelled folder (real/ and fake/, or a CSV of path,label); cases matched by file hash")
    q = csub.add_parser("export", help="write the case table as CSV or Parquet (by the file's extension)")
    q.add_argument("out", help="FILE.csv or FILE.parquet")
    _case_filter_opts(q)
    q = csub.add_parser("delete", help="delete cases: rows, judgements, thumbnails and stored images")
    q.add_argument("sha", nargs="+")
    p.set_defaults(func=cmd_cases)


def _add_learn(sub) -> None:
    """learn: fine-tune on reviewed cases (cmd_learn)."""
    p = sub.add_parser("learn", help="fine-tune a candidate on reviewed cases + replay, gate it, version it")
    p.add_argument("--weights", help="the model to start from (default: the active model)")
    p.add_argument("--replay", action="append",
                   help="training data to replay (default: the model's own, from its card); repeatable")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="at most N steps per epoch")
    p.add_argument("--lr", type=float, default=1e-4, help="head learning rate (the backbone's is scaled as in train)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cases-share", type=float, default=0.3, help="share of each class's draws given to the cases")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--half", action=argparse.BooleanOptionalAction, default=True, help="store the weights in fp16")
    p.add_argument("--no-promote", action="store_true", help="gate and record the candidate, but do not activate it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_learn)


def _add_models(sub) -> None:
    """models and its actions: the model registry (cmd_models)."""
    p = sub.add_parser("models", help="the model registry: list versions, use one, roll back one step")
    msub = p.add_subparsers(dest="action", required=True)
    q = msub.add_parser("list")
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("use", help="make a version the active model")
    q.add_argument("version")
    msub.add_parser("rollback", help="make the previously active version active again")
    p.set_defaults(func=cmd_models)


def _add_video(sub) -> None:
    """video: a verdict for a video file (cmd_video)."""
    p = sub.add_parser("video", help="check a video file: sampled frames, per-face p_fake, a video verdict")
    p.add_argument("file")
    _weights_opts(p)
    _engine_opt(p)
    p.add_argument("--every-s", type=float, default=1.0, help="sample a frame every N seconds (default 1)")
    p.add_argument("--every-k", type=int, help="or sample every k-th frame")
    p.add_argument("--max-frames", type=int, default=600, help="at most this many sampled frames (limit 600)")
    p.add_argument("--top", type=int, default=3, help="how many most suspicious frames to name (and explain)")
    p.add_argument("--heatmaps", help="folder for Grad-CAM panels of the most suspicious frames")
    p.add_argument("--csv", help="per frame and face table")
    p.add_argument("--plot", help="timeline as a self-contained HTML file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_video)


def _add_serve(sub) -> None:
    """serve: the HTTP API (cmd_serve)."""
    p = sub.add_parser("serve", help="HTTP API for other programs (FastAPI; docs at /docs); --ray for Ray Serve")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; another needs API keys)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--weights", help="checkpoint file (default: the shipped model in weights/)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the model card's)")
    p.add_argument("--workers", type=int, default=None, help="requests scored at once (default 2; with --ray: replicas x --max-batch-size)")
    p.add_argument("--queue", type=int, default=None, help="requests that may wait; beyond them 503 + Retry-After (default 16)")
    p.add_argument("--max-body-mb", type=int, default=None, help="largest request body (default 60 MB; 413 beyond)")
    p.add_argument("--rate-per-minute", type=int, default=None,
                   help="images per API key (or client address) per minute; 0: no limit (default; public mode 30)")
    p.add_argument("--allow-anonymous", action="store_true",
                   help="serve a non-loopback address without API keys (e.g. behind an authenticating proxy)")
    p.add_argument("--allow-slow-methods", action="store_true", help="allow ScoreCAM/AblationCAM on /v1/explain")
    p.add_argument("--hash-key", action="store_true",
                   help="read an API key from stdin, print the SHA-256 to put in [serve.keys] / $REALITYCHECK_API_KEYS")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--ray", action="store_true", help="run on Ray Serve (a local Ray, or the cluster at $RAY_ADDRESS)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--replicas", type=int, default=1, help="model replicas on Ray Serve (default 1)")
    p.add_argument("--max-batch-size", type=int, default=8, help="images batched per replica call on Ray Serve")
    p.set_defaults(progress=False)
    _engine_opt(p)
    p.set_defaults(func=cmd_serve)


def _add_info(sub) -> None:
    """info: model cards (cmd_info)."""
    p = sub.add_parser("info", help="show model cards")
    p.add_argument("weights", nargs="*")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def build_parser() -> argparse.ArgumentParser:
    """The `realitycheck` parser: each subcommand is added by its own function, in --help's order."""
    parser = argparse.ArgumentParser(prog="realitycheck", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_predict(sub)
    _add_explain(sub)
    _add_evaluate(sub)
    _add_train(sub)
    _add_attribute(sub)
    _add_export(sub)
    _add_cases(sub)
    _add_learn(sub)
    _add_models(sub)
    _add_video(sub)
    _add_serve(sub)
    add_threshold_command(sub)
    add_views_command(sub)
    _add_info(sub)
    return parser

def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code. Changes no process-wide state (see `run` for the signal)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help
        return int(exc.code or 0)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # recorded by `learn` in the version it makes
    try:
        return args.func(args)
    except UserError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK


def run() -> None:
    """The `realitycheck` program (console script, `python -m realitycheck`): SIGTERM ends a run as
    cleanly as Ctrl-C (partial results kept, `--resume` offered), then `main`'s code is the exit status."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sys.exit(main())


if __name__ == "__main__":
    run()
