"""The recipe search: when the configured int8 recipe misses the gate or the target agreement,
try, in order, (1) the other calibration methods, (2) the most sensitive layers kept in float,
cumulatively, (3) bf16 where the CPU has it; stop at the first step that meets the target, else
keep the cheapest step that meets the gate within one image of the best agreement.

Every candidate is measured the same way, on the evaluation split, and on both int8 files, as
the gate checks them: the one this CPU serves on the CPU provider (with its batch-1 latency),
the other by exact reference execution; a candidate's top-1 and agreement with fp32 are the
worse file's, so the recipe chosen passes the gate on every kind of CPU. Layer
sensitivity is measured on the CALIBRATION images only (so the evaluation split stays unbiased):
for each quantizable node, how much the logit MSE against fp32 falls when that node alone stays
in float (build/sensitivity.py reports the same study for a catalog model).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import onnx

from build import evaluate, progress, quantize
from build.config import GateConfig, QuantizationConfig
from build.recipe import QuantRecipe
from build.sessions import available_providers, reference_session, run, session
from service.model.int8_weights import WeightBits
from service.model.manifest import RecipeSearch, SearchStep

log = logging.getLogger("build")
Pixels = npt.NDArray[np.uint8]
Logits = npt.NDArray[np.float32]
QUANTIZABLE = ("Conv", "Gemm", "MatMul")
SENSITIVITY_IMAGES = 32  # calibration images the per-node study runs on
CALIBRATIONS = (
    QuantRecipe(calibration_method="minmax"),
    QuantRecipe(calibration_method="percentile", percentile=99.999),
    QuantRecipe(calibration_method="percentile", percentile=99.99),
    QuantRecipe(calibration_method="entropy"),
)
CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
StageName = Literal["configured", "calibration", "float layers", "bf16"]


@dataclass(frozen=True, slots=True)
class Measured:
    recipe: QuantRecipe
    step: SearchStep


@dataclass
class Trial:
    """What every candidate is measured against."""

    prepared: Path  # the fp32 graph after quant_pre_process
    fp32: Path
    work: Path
    calibration: Pixels
    evaluation: Pixels
    accept: list[frozenset[int]]
    fp32_logits: Logits
    fp32_top1: float
    weights: WeightBits  # the int8 file this CPU serves
    gate: GateConfig

    @property
    def files(self) -> tuple[WeightBits, ...]:
        """The served file first, then the others (checked by exact reference execution)."""
        return (self.weights, *(w for w in get_args(WeightBits) if w != self.weights))

    def meets_gate(self, drop: float, agreement: float) -> bool:
        floor = self.gate.min_top1_agreement
        return drop <= self.gate.max_top1_drop and (floor is None or agreement >= floor)

    def score(
        self, logits: list[Logits], latency: float | None, stage: StageName, label: str
    ) -> SearchStep:
        """One step from each file's logits: the worse file's top-1 and agreement."""
        top1 = min(evaluate.accuracy(one, self.accept).top1 for one in logits)
        drop = round(self.fp32_top1 - top1, 2)
        agreement = min(evaluate.agreement(self.fp32_logits, one) for one in logits)
        step = SearchStep(
            stage=stage,
            label=label,
            top1=top1,
            top1_drop=drop,
            top1_agreement=agreement,
            latency_ms_batch1=latency,
            meets_gate=self.meets_gate(drop, agreement),
        )
        log.info(
            "recipe search: %-40s top-1 %.2f%% (drop %.2f) agreement %.2f%% %s ms",
            label,
            top1,
            drop,
            agreement,
            latency,
        )
        return step

    def measure(
        self, recipe: QuantRecipe, stage: StageName, label: str, ranges: Any = None
    ) -> Measured:
        if ranges is None:
            ranges = quantize.calibrate(self.prepared, self.calibration, recipe)
        logits, latency = [], None
        for weights in self.files:
            out = self.work / f"candidate-{weights}.onnx"
            quantize.quantize_with_ranges(self.prepared, out, ranges, recipe, weights)
            served = weights == self.weights
            sess = session(out, "cpu") if served else reference_session(out)
            logits.append(evaluate.predict(sess, self.evaluation, f"search: {label} ({weights})"))
            if served:
                latency = evaluate.latency_ms(sess, self.evaluation[0])
        return Measured(recipe, self.score(logits, latency, stage, label))


def quantizable_nodes(path: Path) -> list[str]:
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in QUANTIZABLE]


def rank_nodes(trial: Trial, base: QuantRecipe, ranges: Any) -> list[tuple[str, float]]:
    """Per node: how much the logit MSE (vs fp32, on calibration images; the worse int8 file's)
    falls when only that node stays in float; the most helpful first."""
    pixels = trial.calibration[:SENSITIVITY_IMAGES]
    reference = run(session(trial.fp32), pixels)

    def error(recipe: QuantRecipe) -> float:
        errors = []
        for weights in trial.files:
            out = trial.work / f"one-{weights}.onnx"
            quantize.quantize_with_ranges(trial.prepared, out, ranges, recipe, weights)
            sess = session(out) if weights == trial.weights else reference_session(out)
            errors.append(float(np.mean((run(sess, pixels) - reference) ** 2)))
        return max(errors)

    baseline = error(base)
    gains = [
        (node, round(baseline - error(replace(base, nodes_to_exclude=(node,))), 6))
        for node in progress.bar(quantizable_nodes(trial.prepared), "sensitivity", "node")
    ]
    return sorted(gains, key=lambda g: -g[1])


def bf16_support(cpuinfo: Path = CPUINFO) -> tuple[bool, str]:
    """(supported, why): AVX-512 BF16 or AMX-BF16 in the CPU's flags."""
    try:
        text = cpuinfo.read_text()
    except OSError as exc:
        return False, f"cannot read {cpuinfo}: {exc}"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, f"this CPU has {', '.join(found)}"
    return False, "this CPU has neither AVX-512 BF16 nor AMX-BF16 (no avx512_bf16/amx_bf16 flag)"


def measure_bf16(trial: Trial) -> SearchStep:
    """The fp32 graph on OpenVINO with bf16 inference precision, or why it was skipped."""
    label = "bf16 (fp32 graph, OpenVINO bf16 inference precision)"
    supported, why = bf16_support()
    if not supported:
        return SearchStep(stage="bf16", label=label, skipped=why)
    if "openvino" not in available_providers():
        return SearchStep(stage="bf16", label=label, skipped="the OpenVINO provider is missing")
    import onnxruntime as ort

    config = trial.work / "bf16.json"
    config.write_text(json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}}))
    options = {"device_type": "CPU", "load_config": str(config)}
    try:
        sess = ort.InferenceSession(
            str(trial.fp32), providers=[("OpenVINOExecutionProvider", options)]
        )
        logits = evaluate.predict(sess, trial.evaluation, "search: bf16")
        latency = evaluate.latency_ms(sess, trial.evaluation[0])
    except Exception as exc:  # a provider option this build of OpenVINO refuses
        return SearchStep(stage="bf16", label=label, skipped=f"OpenVINO refused bf16: {exc}")
    return trial.score([logits], latency, "bf16", label)


def _best(candidates: list[Measured]) -> Measured:
    """Highest agreement, then top-1, then the faster."""
    return max(
        candidates,
        key=lambda m: (
            m.step.top1_agreement or 0.0,
            m.step.top1 or 0.0,
            -(m.step.latency_ms_batch1 or 0.0),
        ),
    )


def cheapest_near_best(steps: list[Measured], images: int) -> Measured | None:
    """Among the steps that meet the gate, the first (steps come cheapest first: calibration,
    then more and more layers in float) whose agreement is within one image of the best: a
    slower recipe must win by more than one image's worth of noise."""
    passing = [m for m in steps if m.step.meets_gate]
    if not passing:
        return None
    best = max(m.step.top1_agreement or 0.0 for m in passing)
    one_image = 100.0 / max(1, images)
    return next(m for m in passing if (m.step.top1_agreement or 0.0) >= best - one_image)


@dataclass(frozen=True, slots=True)
class SearchResult:
    recipe: QuantRecipe | None  # None: no int8 recipe meets the gate
    info: RecipeSearch


def search(
    trial: Trial, configured: Measured, cfg: QuantizationConfig, reason: str
) -> SearchResult:
    target = cfg.target_agreement

    def meets_target(m: Measured) -> bool:
        return m.step.meets_gate and (m.step.top1_agreement or 0.0) >= target

    steps = [configured]
    tried = {configured.recipe.describe()}
    for recipe in CALIBRATIONS:
        if recipe.describe() not in tried and not meets_target(_best(steps)):
            tried.add(recipe.describe())
            steps.append(trial.measure(recipe, "calibration", recipe.describe()))
    base = _best(steps)
    ranked: list[tuple[str, float]] = []
    if not meets_target(base) and cfg.max_float_nodes > 0:
        ranges = quantize.calibrate(trial.prepared, trial.calibration, base.recipe)
        ranked = rank_nodes(trial, base.recipe, ranges)
        kept: list[str] = list(base.recipe.nodes_to_exclude)
        for node, _ in ranked[: cfg.max_float_nodes]:
            kept.append(node)
            recipe = replace(base.recipe, nodes_to_exclude=tuple(kept))
            label = f"{base.recipe.describe()} + {len(kept)} in float (last: {node})"
            steps.append(trial.measure(recipe, "float layers", label, ranges))
            if meets_target(steps[-1]):
                break
    int8_steps = [m.step for m in steps]
    best = next((m for m in steps if meets_target(m)), None) or cheapest_near_best(
        steps, len(trial.evaluation)
    )
    bf16 = None
    if best is None or not meets_target(best):
        bf16 = measure_bf16(trial)
    chosen = best.step.label if best is not None else "none: no int8 recipe meets the gate"
    if best is None and bf16 is not None and bf16.meets_gate:
        chosen = f"none: only {bf16.label} meets the gate"
    info = RecipeSearch(
        ran=True,
        reason=reason,
        target_top1_agreement=target,
        fp32_latency_ms_batch1=None,
        steps=(*int8_steps, *([bf16] if bf16 is not None else [])),
        chosen=chosen,
        nodes_ranked=tuple(ranked[:20]),
    )
    return SearchResult(best.recipe if best is not None else None, info)


def not_needed(configured: Measured, target: float, searching: bool) -> RecipeSearch:
    why = (
        "the configured recipe meets the gate and the target agreement"
        if searching
        else "[quantization] search = false"
    )
    return RecipeSearch(
        ran=False,
        reason=why,
        target_top1_agreement=target,
        steps=(configured.step,),
        chosen=configured.step.label,
    )
