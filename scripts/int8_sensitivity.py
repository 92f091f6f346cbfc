"""Which layers must stay fp32 for an INT8 graph to keep the answers? A per-layer sensitivity study.

The export's INT8 graph (everything quantized but the stem and the dense head) flips 1-2% of the
default's StyleGAN1 and FFHQ test labels, so its gate fails (README, "Inference engines"). This
script measures, on the VALIDATION split only (the test split is the gate's and is never read here):

1. how much noise INT8 adds at every quantized tensor of that graph (signal-to-quantization-noise
   ratio of each activation and each weight, onnxruntime's qdq_loss_debug), which ranks the
   convolutions from most to least sensitive;
2. for a few candidate graphs (calibration method; depthwise convolutions kept fp32; the K
   lowest-SQNR convolutions kept fp32; the late or the early blocks kept fp32), the export's own
   gate on validation (label agreement at the card's threshold and |dAUC|, overall and per source;
   unfamiliar flags) and the forward speed.

A candidate that passed here would be exported and gated on the test split as usual. For the
default none did; README, "Inference engines", gives the table.

    python scripts/int8_sensitivity.py weights/realitycheck-lite2-aligned.pt manifests/shared-data.toml --out runs/int8
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

from realitycheck.model import checkpoints, engines, export
from realitycheck.model.decision import is_fake
from realitycheck.model.inference import Classifier
from realitycheck.model.ood import OODStats


def calibration_views(ref, data, seed: int, n: int) -> list[np.ndarray]:
    """The export's calibration batches: its n training-split images, with their mirror images."""
    return list(export.preprocessed_batches(ref, [r[0] for r in export.calibration_files(data, seed, n)], views=True))


def is_depthwise(node) -> bool:
    return node.op_type == "Conv" and next((at.i for at in node.attribute if at.name == "group"), 1) > 1


def prepared_fp32(model, card, folder: Path) -> Path:
    """The fp32 graph as quantize_int8 sees it (after onnxruntime's pre-processing), so tensor names match."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, pre = folder / "fp32.raw.onnx", folder / "fp32.pre.onnx"
    engines.save_proto(engines.export_proto(model, card), raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
    return pre


def layer_sensitivity(fp32: Path, int8: Path, views: np.ndarray, folder: Path) -> list[dict]:
    """Per convolution: SQNR (dB) of its input activation and of its weight under INT8; low = sensitive."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    def batches():
        return [{"input": views[i:i + 8]} for i in range(0, len(views), 8)]

    fa, qa = folder / "fp32.debug.onnx", folder / "int8.debug.onnx"
    modify_model_output_intermediate_tensors(str(fp32), str(fa))
    modify_model_output_intermediate_tensors(str(int8), str(qa))
    act = compute_activation_error(create_activation_matching(collect_activations(str(qa), batches()),
                                                              collect_activations(str(fa), batches())))
    weight = compute_weight_error(create_weight_matching(str(fp32), str(int8)))
    rows = []
    for node in onnx.load(str(fp32)).graph.node:
        if node.op_type != "Conv":
            continue
        a = act.get(node.input[0], {}).get("qdq_err")
        w = weight.get(node.input[1])
        rows.append({"node": node.name, "depthwise": is_depthwise(node), "act_sqnr": None if a is None else float(a),
                     "weight_sqnr": None if w is None else float(w)})
    return rows


def worst_first(rows: list[dict]) -> list[str]:
    """Convolutions ordered by the lower of their two SQNRs (quantized ones only)."""
    scored = [(min(v for v in (r["act_sqnr"], r["weight_sqnr"]) if v is not None), r["node"]) for r in rows
              if r["act_sqnr"] is not None or r["weight_sqnr"] is not None]
    return [n for _, n in sorted(scored)]


def blocks_start(names: list[str], block: int) -> int | None:
    """Index of the first node of EfficientNet block `block` in the graph's node order."""
    return next((i for i, n in enumerate(names) if n.startswith(f"/net/_blocks/_blocks.{block}/")), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("data", nargs="+", help="what --data takes; validation images are scored, training ones calibrate")
    ap.add_argument("--out", default="runs/int8", help="folder for the graphs and results.json / results.md")
    ap.add_argument("--calibration-images", type=int, default=256)
    ap.add_argument("--debug-views", type=int, default=32, help="validation views for the SQNR pass")
    ap.add_argument("--keep", default="5,20,40", help="numbers K of lowest-SQNR convolutions kept fp32")
    ap.add_argument("--blocks", default="3,6,10,15", help="block indices B: blocks >= B fp32, and blocks < B fp32")
    a = ap.parse_args()

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model, card, extras = checkpoints.load_checkpoint_extras(a.weights)
    ood = OODStats.from_tensors(extras["ood"]) if "ood" in extras else None
    ref = Classifier(model, card, precision="fp32", engine="torch", ood=ood)
    seed = int(((card.training or {}).get("settings") or {}).get("seed", 0) or 0)
    val = export.labelled_files(a.data, "val", seed)
    print(f"{len(val)} validation images; threshold {ref.threshold}", flush=True)

    calib = calibration_views(ref, a.data, seed, a.calibration_images)
    nodes = list(onnx.load(str(prepared_fp32(model, card, out))).graph.node)
    first_conv = next(n.name for n in nodes if n.op_type == "Conv")
    dense = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    depthwise = [n.name for n in nodes if is_depthwise(n)]

    def build(name: str, keep: list[str], method: str = "minmax") -> Path:
        path = out / f"{name}.onnx"
        t0 = time.perf_counter()
        export.quantize_int8(model, card, path, iter(calib), method=method, keep_fp32=keep)
        print(f"{name}: calibrated in {time.perf_counter() - t0:.0f} s ({len(keep)} nodes fp32)", flush=True)
        return path

    base_keep = export.default_keep_fp32(nodes)  # what `realitycheck export --int8` keeps fp32
    graphs = {"export (stem + head fp32)": (build("export", base_keep), len(base_keep))}

    # 1. per-layer noise of the export's graph, on a few validation views
    debug = [r[0] for r in export.spread(val, a.debug_views // 2)]
    views = np.concatenate(list(export.preprocessed_batches(ref, debug, views=True)))
    sens = layer_sensitivity(out / "fp32.pre.onnx", graphs["export (stem + head fp32)"][0], views, out)
    order = worst_first(sens)
    print("most sensitive convolutions: " + ", ".join(order[:10]), flush=True)

    # 2. candidates
    for method in ("percentile", "entropy"):
        try:
            graphs[f"export, {method} calibration"] = (build(f"export-{method}", base_keep, method), len(base_keep))
        except (MemoryError, RuntimeError, ValueError) as exc:  # a histogram calibrator that fails is reported
            print(f"{method}: {type(exc).__name__}: {exc}", flush=True)
    graphs["depthwise fp32"] = (build("depthwise", base_keep + depthwise), len(base_keep + depthwise))
    for k in [int(x) for x in a.keep.split(",") if x]:
        keep = base_keep + order[:k]
        graphs[f"{k} lowest-SQNR convolutions fp32"] = (build(f"top{k}", keep), len(set(keep)))
    names = [n.name for n in nodes]
    for b in [int(x) for x in a.blocks.split(",") if x]:
        start = blocks_start(names, b)
        if start is None:
            continue
        graphs[f"blocks {b}+ fp32 (late layers)"] = (build(f"tail{b}", [first_conv] + names[start:]), 1 + len(names) - start)
        graphs[f"stem and blocks 0-{b - 1} fp32 (early layers)"] = (build(f"head{b}", names[:start] + dense), start + len(dense))

    runners = {("onnxruntime", name): engines.GraphEngine("onnxruntime", "int8", path) for name, (path, _) in graphs.items()}
    runners[("onnxruntime", "fp32")] = engines.GraphEngine("onnxruntime", "fp32", out / "fp32.pre.onnx")
    t0 = time.perf_counter()
    p, scores, ok = export.probabilities(ref, runners, [r[0] for r in val])
    print(f"scored {len(val)} validation images with {len(runners) + 1} variants in {time.perf_counter() - t0:.0f} s", flush=True)
    kept = [i for i, good in enumerate(ok) if good]
    labels, sources = [val[i][1] for i in kept], [val[i][2] for i in kept]
    x = calib[0]
    results = []
    for key, r in runners.items():
        res = export.gate(p["torch", "fp32"], p[key], labels, sources, ref.threshold,
                          ood_reference=scores.get(("torch", "fp32")), ood_engine=scores.get(key),
                          ood_threshold=ood.threshold if ood is not None else None)
        worst = min((c for c in res.checks), key=lambda c: c.agreement)
        flips = int(np.sum(is_fake(p["torch", "fp32"], ref.threshold) != is_fake(p[key], ref.threshold)))
        results.append({"variant": key[1], "fp32_nodes": graphs.get(key[1], (None, None))[1],
                        "views_per_second": export.images_per_second(r.run, x, 2.0),
                        "passed_on_validation": res.passed, "label_flips": flips,
                        "worst": f"{worst.name} {worst.agreement:.2%}",
                        "max_abs_dp": float(np.max(np.abs(p[key] - p["torch", "fp32"]))),
                        "p95_abs_dp": float(np.quantile(np.abs(p[key] - p["torch", "fp32"]), 0.95)), "failed": res.failed})
        print(json.dumps(results[-1]), flush=True)
    (out / "results.json").write_text(json.dumps({"weights": a.weights, "validation_images": len(kept),
                                                  "threshold": ref.threshold, "sensitivity": sens,
                                                  "order": order, "variants": results}, indent=1))
    title = (f"INT8 candidates of {Path(a.weights).name} on {len(kept)} validation images (threshold "
             f"{ref.threshold}); the gate of `realitycheck export`, applied to validation")
    header = (f"| variant | nodes kept fp32 | views/s (batch {len(x)}) | label flips | worst source agreement "
              "| max abs dp | p95 abs dp | gate on validation |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['variant']} | {r['fp32_nodes'] if r['fp32_nodes'] is not None else 'all'} | "
                     f"{r['views_per_second']:.0f} | {r['label_flips']} | {r['worst']} | {r['max_abs_dp']:.3f} | {r['p95_abs_dp']:.3f} | "
                     f"{'passed' if r['passed_on_validation'] else 'failed: ' + '; '.join(r['failed'])} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
