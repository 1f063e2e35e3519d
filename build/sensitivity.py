"""Quantization study for one model: which calibration method, and which layers to keep in float.

    python -m build.sensitivity --model efficientnet_lite0 [--top 6] [--json out.json]

1. Each calibration method (minmax, entropy, percentile): int8 top-1 on the evaluation images,
   per execution provider, and batch-1 latency.
2. Per-layer sensitivity, measured on the CALIBRATION images only (so the evaluation set stays
   unbiased): for every quantizable node, the int8 model with just that node kept in float, and
   how much closer its logits get to fp32 (mean squared logit error).
3. The most sensitive nodes kept in float, cumulatively: top-1 and latency for each step.

The winning recipe goes into the model's config (build/models/<name>.toml, [quantization]) by
hand: it is data, reviewed and reproducible. A user's model gets the same study automatically
when it misses its target (build/recipe_search.py, whose helpers this module shares).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from build import catalog, data, evaluate, export, quantize
from build.catalog import CatalogModel
from build.graph import UInt8Classifier
from build.recipe import QuantRecipe
from build.recipe_search import quantizable_nodes
from build.sessions import available_providers, run, session
from build.weights import resolve
from service import paths

log = logging.getLogger("build.sensitivity")
Pixels = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Step:
    label: str
    top1: dict[str, float]  # provider -> int8 top-1 (percent)
    agreement: dict[str, float]
    latency_ms: dict[str, float]


@dataclass
class Study:
    entry: CatalogModel
    work: Path
    prepared: Path
    fp32: Path
    cal: Pixels
    ev: Pixels
    accept: list[frozenset[int]]

    def measure(self, recipe: QuantRecipe, label: str, ranges: Any = None) -> Step:
        out = self.work / "candidate.onnx"
        if ranges is None:
            ranges = quantize.calibrate(self.prepared, self.cal, recipe)
        quantize.quantize_with_ranges(self.prepared, out, ranges, recipe)
        result = evaluate.evaluate(self.fp32, out, self.ev, self.accept, 100.0, True)
        step = Step(
            label=label,
            top1={"fp32": result.fp32.top1} | {p: r.int8.top1 for p, r in result.int8.items()},
            agreement={p: r.top1_agreement for p, r in result.int8.items()},
            latency_ms=result.latency_ms_batch1,
        )
        log.info("%s", step)
        return step


def logit_error(sess: Any, pixels: Pixels, reference: npt.NDArray[np.float32]) -> float:
    return float(np.mean((run(sess, pixels) - reference) ** 2))


def layer_sensitivity(study: Study, base: QuantRecipe, ranges: Any) -> list[tuple[str, float]]:
    """Per node: how much the logit MSE (vs fp32, calibration images) drops when only that node
    stays in float; the node whose exclusion helps most comes first."""
    reference = run(session(study.fp32), study.cal)
    out = study.work / "one.onnx"
    quantize.quantize_with_ranges(study.prepared, out, ranges, base)
    baseline = logit_error(session(out), study.cal, reference)
    scores = []
    for node in tqdm(quantizable_nodes(study.prepared), desc="sensitivity", unit="node"):
        quantize.quantize_with_ranges(
            study.prepared, out, ranges, replace(base, nodes_to_exclude=(node,))
        )
        scores.append((node, baseline - logit_error(session(out), study.cal, reference)))
    log.info("all-int8 logit MSE on calibration images: %.4f", baseline)
    return sorted(scores, key=lambda s: -s[1])


def setup(entry: CatalogModel, work: Path, data_dir: Path) -> Study:
    split = data.choose_split(data_dir, required=False)
    wrapped = UInt8Classifier(entry.load(resolve(entry.official, None)), entry.mean, entry.std)
    fp32 = work / "model.fp32.onnx"
    export.export_onnx(wrapped.eval(), fp32, entry.preprocess.crop_size)
    prepared = work / "prepared.onnx"
    quantize.prepare(fp32, prepared)
    return Study(
        entry=entry,
        work=work,
        prepared=prepared,
        fp32=fp32,
        cal=data.load_pixels(split.calibration, entry.preprocess, "calibration"),
        ev=data.load_pixels(tuple(e.path for e in split.evaluation), entry.preprocess, "eval"),
        accept=[e.accept for e in split.evaluation],
    )


CANDIDATES = (
    QuantRecipe(calibration_method="minmax"),
    QuantRecipe(calibration_method="entropy"),
    QuantRecipe(calibration_method="percentile", percentile=99.999),
    QuantRecipe(calibration_method="percentile", percentile=99.99),
    QuantRecipe(calibration_method="minmax", adjust_weights_for_bias=False),
    QuantRecipe(calibration_method="percentile", adjust_weights_for_bias=False),
)


def study_model(
    entry: CatalogModel, data_dir: Path, top: int, base: QuantRecipe, compare: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="imgcls-sens-") as tmp:
        study = setup(entry, Path(tmp), data_dir)
        steps = [study.measure(r, r.describe()) for r in (CANDIDATES if compare else ())]
        ranges = quantize.calibrate(study.prepared, study.cal, base)
        ranking = layer_sensitivity(study, base, ranges) if top else []
        steps.append(study.measure(base, f"{base.describe()} (base of the layer study)", ranges))
        excluded: list[str] = []
        for node, _ in ranking[:top]:
            excluded.append(node)
            recipe = replace(base, nodes_to_exclude=tuple(excluded))
            steps.append(study.measure(recipe, f"+ {len(excluded)} in float: {node}", ranges))
    return {
        "model": entry.name,
        "providers": list(available_providers()),
        "steps": [asdict(s) for s in steps],
        "sensitivity": ranking,
    }


def markdown(report: dict[str, Any]) -> str:
    providers = report["providers"]
    head = "| step | fp32 top-1 | " + " | ".join(f"int8 top-1 / agree ({p})" for p in providers)
    head += " | " + " | ".join(f"ms b1 {k}" for k in report["steps"][0]["latency_ms"]) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in report["steps"]:
        cells = [s["label"], f"{s['top1']['fp32']:.2f}"]
        cells += [f"{s['top1'][p]:.2f} / {s['agreement'][p]:.2f}" for p in providers]
        cells += [f"{v:.2f}" for v in s["latency_ms"].values()]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nMost sensitive nodes (logit MSE reduction when kept in float):")
    lines += [f"- {node}: {gain:.4f}" for node, gain in report["sensitivity"][:10]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build.sensitivity", description=__doc__)
    p.add_argument("--model", default="efficientnet_lite0", choices=catalog.MODEL_NAMES)
    p.add_argument("--data-dir", type=Path, default=paths.data_dir())
    p.add_argument("--top", type=int, default=6, help="how many sensitive nodes to try in float")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--percentile", type=float, default=99.999)
    p.add_argument(
        "--no-bias-adjust", action="store_true", help="QDQDisableWeightAdjustForInt32Bias"
    )
    p.add_argument("--skip-compare", action="store_true", help="only the per-layer study")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    base = QuantRecipe(
        calibration_method=args.method,
        percentile=args.percentile,
        adjust_weights_for_bias=not args.no_bias_adjust,
    )
    entry = catalog.get(args.model)
    report = study_model(entry, args.data_dir, args.top, base, not args.skip_compare)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
