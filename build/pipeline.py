"""The build of one model.toml: export -> quantize -> evaluate (-> recipe search) -> manifest.

Nothing half-written: every stage works in a fresh folder beside the model's (a copy of it for
``--stage quantize|evaluate``) and only a stage that succeeds replaces ``<out>/<name>/``, by
rename. A failure of any kind leaves ``--out`` as it was. Between stages, what the manifest
will need is kept in ``build_state.json``. The manifest is written only when the gate passes;
a rejected build's manifest and report are kept in a temporary folder the error names.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from build import (
    baseline,
    data,
    evaluate,
    export,
    onnx_source,
    photo_size,
    quantize,
    recipe_search,
    report,
    sessions,
    staging,
)
from build import config as config_file
from build.config import ModelConfig
from build.errors import BuildError, GateFailed, SourceError
from build.graph import UInt8Classifier
from build.recipe import QuantRecipe
from build.torch_source import TorchSource, torch_source
from service import paths
from service.inference.preprocess import PreprocessSpec
from service.model import int8_weights as isa
from service.model.int8_weights import WeightBits
from service.model.manifest import (
    ClassData,
    DataInfo,
    EvaluationInfo,
    ExportInfo,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    PhoneSizeEvaluation,
    QuantizationInfo,
    RecipeSearch,
    SearchStep,
    file_entry,
    sha256_file,
    write_manifest,
)

log = logging.getLogger("build")
Stage = Literal["all", "export", "quantize", "evaluate"]
FP32_NAME = "model.fp32.onnx"
INT8_NAME = "model.int8.onnx"  # full-range weights, for CPUs with VNNI/AMX
INT8_W7_NAME = "model.int8-w7.onnx"  # 7-bit weights, for x86 without VNNI
# (service/model/int8_weights.py)
INT8_NAMES: dict[WeightBits, str] = {"int8": INT8_NAME, "int8_w7": INT8_W7_NAME}
LABELS_NAME = "labels.txt"
STATE_NAME = "build_state.json"
REJECTED_NAME = "manifest.rejected.json"
EXPORT_CHECK_IMAGES = 16


@dataclass(frozen=True, slots=True)
class BuildOptions:
    config: Path  # the model.toml
    weights: str | None = None  # --weights: "random" or a file, instead of the config's
    out: Path = paths.DEFAULT_ARTIFACTS_DIR  # artifacts root: the model goes to <out>/<name>/
    data_dir: Path | None = None  # --data-dir: replaces [data] dir, or roots a named dataset
    stage: Stage = "all"
    max_top1_drop: float | None = None  # --max-top1-drop: replaces [gate] max_top1_drop
    phone_size_images: int | None = photo_size.DEFAULT_IMAGES  # None: all; 0: skipped


class BuildState(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: ModelInfo
    num_classes: int
    export: ExportInfo | None = None
    quantization: QuantizationInfo | None = None
    recipe: QuantRecipe | None = None  # what the int8 files were made with
    stage_seconds: dict[str, float] = Field(default_factory=dict)


@dataclass
class Build:
    """One model's build: its config, source, data, and the folder it is written into."""

    config: ModelConfig
    options: BuildOptions
    seconds: dict[str, float] = field(default_factory=dict)
    work: Path = Path()  # the stage's folder; renamed to model_dir on success

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_dir(self) -> Path:
        return self.options.out / self.name

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(self.config.preprocess.resize, self.config.preprocess.crop)

    @cached_property
    def labels(self) -> list[str]:
        labels = self.config.labels_list()
        if len(labels) < 2:
            raise SourceError(
                f"{self.config.labels.file} has {len(labels)} label; a classifier needs at "
                "least 2 classes (one logit per class; a single sigmoid logit is not served)"
            )
        return labels

    @cached_property
    def torch(self) -> TorchSource | None:
        if self.config.source.onnx is not None:
            return None
        return torch_source(self.config.source, self.options.weights)

    @cached_property
    def folders(self) -> data.FolderSplit | None:
        d = self.config.data
        if d.dir is None:
            return None
        return data.folder_split(
            d.dir,
            self.labels,
            self.spec,
            seed=d.seed,
            fraction=d.calibration_fraction,
            max_calibration=d.max_calibration_images,
            max_evaluation=d.max_evaluation_images,
            max_unreadable_fraction=d.max_unreadable_fraction,
        )

    @cached_property
    def split(self) -> data.DataSplit:
        if self.folders is not None:
            return self.folders.split
        root = self.options.data_dir or paths.data_dir()
        split = data.choose_split(root, required=self.options.data_dir is not None)
        if split.small:
            log.warning("no labeled set under %s: SMALL evaluation on %s", root, split.dataset)
        return split

    @property
    def max_top1_drop(self) -> float:
        given = self.options.max_top1_drop
        return self.config.gate.max_top1_drop if given is None else given

    def warn_if_gate_below_resolution(self) -> None:
        """One image of a small evaluation split moves top-1 by more than a fine gate allows:
        said once, so a user reads a failure as one image, not as a broken model."""
        images = len(self.split.evaluation)
        step = 100.0 / max(1, images)
        if step > self.max_top1_drop:
            log.warning(
                "%s: one image of the %d-image evaluation split is %.2f points of top-1, more "
                "than the gate's %g: a single changed answer fails the build (add images, or "
                "raise [gate] max_top1_drop)",
                self.name,
                images,
                step,
                self.max_top1_drop,
            )

    def pixels(self, paths_: tuple[Path, ...], what: str) -> npt.NDArray[np.uint8]:
        return data.load_pixels(paths_, self.spec, what)

    @cached_property
    def eval_pixels(self) -> npt.NDArray[np.uint8]:
        return self.pixels(tuple(e.path for e in self.split.evaluation), "evaluation")

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s: %s ...", self.name, stage)
        yield
        self.seconds[stage] = round(time.perf_counter() - start, 2)
        log.info("%s: %s done in %.1f s", self.name, stage, self.seconds[stage])

    def load_state(self) -> BuildState:
        path = self.work / STATE_NAME
        if not path.is_file():
            where = self.model_dir / STATE_NAME
            raise BuildError(f"{where} is missing: run the earlier stages first (--stage all)")
        return BuildState.model_validate_json(path.read_text())

    def save_state(self, state: BuildState) -> None:
        state.stage_seconds.update(self.seconds)
        (self.work / STATE_NAME).write_text(state.model_dump_json(indent=2) + "\n")

    def model_info(self) -> ModelInfo:
        c = self.config
        if self.torch is None:
            assert c.source.onnx is not None
            digest: str | None = sha256_file(c.source.onnx)
            source, arch, untrained = f"onnx:{c.source.onnx}", f"onnx:{c.source.onnx.name}", False
        else:
            w = self.torch.weights
            digest, source, untrained = w.sha256, w.source, w.untrained
            arch = self.torch.arch.describe()
        return ModelInfo(
            name=c.name,
            version=f"{c.version}-{digest[:8] if digest else 'random'}",
            architecture=arch,
            weights_source=source,
            weights_sha256=digest,
            untrained=untrained,
            description=c.description,
            config_sha256=sha256_file(c.path),
        )


# --- export ---------------------------------------------------------------------------------


def run_export(b: Build) -> None:
    with b.timed("export"):
        fp32 = b.work / FP32_NAME
        info = _export_onnx(b, fp32) if b.torch is None else _export_torch(b, b.torch, fp32)
        (b.work / LABELS_NAME).write_text("\n".join(b.labels) + "\n")
    log.info(
        "%s: max |logit| difference source vs built fp32: %.2e", b.name, info.max_abs_logit_diff
    )
    b.save_state(BuildState(model=b.model_info(), num_classes=len(b.labels), export=info))


def _export_torch(b: Build, source: TorchSource, fp32: Path) -> ExportInfo:
    if source.weights.untrained:
        log.warning("%s: RANDOM WEIGHTS: marked untrained, for speed work only", b.name)
    net, classes = source.load(len(b.labels))
    if classes != len(b.labels):
        raise SourceError(
            f"{source.weights.path} has a {classes}-class head but {b.config.labels.file} has "
            f"{len(b.labels)} labels"
        )
    p = b.config.preprocess
    wrapped = UInt8Classifier(net, p.mean, p.std).eval()
    export.export_onnx(wrapped, fp32, p.crop)
    check = export.compare_with_torch(wrapped, fp32, b.eval_pixels[:EXPORT_CHECK_IMAGES])
    return ExportInfo(
        exporter=export.exporter_name(),
        opset=export.OPSET,
        dynamic_batch=True,
        max_abs_logit_diff=check.max_abs_logit_diff,
        diff_images=check.images,
    )


def _export_onnx(b: Build, fp32: Path) -> ExportInfo:
    src = b.config.source
    assert src.onnx is not None
    p = b.config.preprocess
    model = onnx_source.load(src.onnx)
    summary = onnx_source.summarize(model, src.onnx, p.crop)
    probabilities = src.output == "probabilities"
    wrapped = onnx_source.wrap(model, summary, p.crop, p.mean, p.std, probabilities, src.onnx)
    export.save_onnx(wrapped, fp32)
    pixels = b.eval_pixels[:EXPORT_CHECK_IMAGES]
    onnx_source.check_runs(fp32, pixels, len(b.labels), src.onnx)
    logits = evaluate.predict(sessions.session(fp32, "cpu"), pixels, "export check")
    diff = onnx_source.compare_with_original(
        model, logits, pixels, summary, p.mean, p.std, probabilities
    )
    if diff > 1e-2 * max(1.0, float(np.max(np.abs(logits)))):
        raise SourceError(
            f"{src.onnx}: the wrapped graph's logits differ from the original's by {diff:.3g}"
        )
    return ExportInfo(
        exporter=f"{summary.describe()}: wrapped with the uint8 NHWC front",
        opset=max(summary.opset, onnx_source.MIN_OPSET),
        dynamic_batch=True,
        max_abs_logit_diff=diff,
        diff_images=len(pixels),
    )


# --- quantize -------------------------------------------------------------------------------


def configured_recipe(c: ModelConfig) -> QuantRecipe:
    q = c.quantization
    return QuantRecipe(
        calibration_method=q.method,
        percentile=q.percentile,
        adjust_weights_for_bias=q.adjust_weights_for_bias,
        nodes_to_exclude=q.nodes_to_exclude,
    )


def _quantization_info(
    b: Build, recipe: QuantRecipe, search: RecipeSearch | None
) -> QuantizationInfo:
    return QuantizationInfo(
        format="QDQ",
        per_channel=True,
        activation_type="QUInt8",
        weight_type="QInt8",
        calibration_method=recipe.describe(),
        calibration_images=len(b.split.calibration),
        calibration_sha256=data.files_sha256(b.split.calibration),
        calibration_source=b.split.calibration_source,
        nodes_excluded=recipe.nodes_to_exclude,
        search=search,
    )


def _calibration_pixels(b: Build) -> npt.NDArray[np.uint8]:
    return b.pixels(b.split.calibration, "calibration")


def run_quantize(b: Build) -> None:
    state = b.load_state()
    recipe = configured_recipe(b.config)
    with b.timed("quantize"):
        outputs = {key: b.work / name for key, name in INT8_NAMES.items()}
        quantize.quantize(b.work / FP32_NAME, outputs, _calibration_pixels(b), recipe)
    state.quantization = _quantization_info(b, recipe, None)
    state.recipe = recipe
    b.save_state(state)


# --- evaluate -------------------------------------------------------------------------------


def _evaluate_files(b: Build, gate_applicable: bool) -> evaluate.Evaluation:
    # The file this CPU computes exactly runs on every provider with its real kernels; the
    # other is checked by exact reference execution, so both files are gated on any machine.
    served = isa.exact_int8_file()
    return evaluate.evaluate(
        b.work / FP32_NAME,
        b.work / INT8_NAMES[served],
        b.eval_pixels,
        [e.accept for e in b.split.evaluation],
        b.max_top1_drop,
        gate_applicable=gate_applicable,
        reference={k: b.work / n for k, n in INT8_NAMES.items() if k != served},
    )


def _configured_step(
    result: evaluate.Evaluation, recipe: QuantRecipe, trial_gate: bool
) -> recipe_search.Measured:
    # As the search measures its candidates: the worse int8 file's figures (recipe_search.py).
    rows = [next(iter(result.int8.values())), *result.reference.values()]
    top1 = min(p.int8.top1 for p in rows)
    step = SearchStep(
        stage="configured",
        label=recipe.describe()
        + (f" + {len(recipe.nodes_to_exclude)} in float" if recipe.nodes_to_exclude else ""),
        top1=top1,
        top1_drop=round(result.fp32.top1 - top1, 2),
        top1_agreement=min(p.top1_agreement for p in rows),
        latency_ms_batch1=next(
            (v for k, v in result.latency_ms_batch1.items() if k.endswith("/int8")), None
        ),
        meets_gate=trial_gate,
    )
    return recipe_search.Measured(recipe, step)


def _meets(b: Build, result: evaluate.Evaluation) -> bool:
    floor = b.config.gate.min_top1_agreement
    agreements = [p.top1_agreement for p in [*result.int8.values(), *result.reference.values()]]
    return result.passed and (floor is None or min(agreements) >= floor)


def _search(
    b: Build, state: BuildState, result: evaluate.Evaluation, recipe: QuantRecipe
) -> tuple[evaluate.Evaluation, QuantRecipe, RecipeSearch | None]:
    """The recipe search when the configured recipe misses (build/recipe_search.py); the int8
    files are then remade with what it chose and evaluated again, in full."""
    q = b.config.quantization
    if not result.gate_applicable:
        return result, recipe, None
    configured = _configured_step(result, recipe, _meets(b, result))
    agreement = configured.step.top1_agreement or 0.0
    misses = [] if _meets(b, result) else ["misses the gate"]
    if agreement < q.target_agreement:
        misses.append(f"agrees with fp32 on {agreement:.2f}% < target {q.target_agreement:g}%")
    if not misses or not q.search:
        return result, recipe, recipe_search.not_needed(configured, q.target_agreement, q.search)
    reason = f"the configured recipe {' and '.join(misses)}"
    log.info("%s: recipe search: %s", b.name, reason)
    with tempfile.TemporaryDirectory(prefix="imgcls-search-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantize.prepare(b.work / FP32_NAME, prepared)
        assert result.fp32_logits is not None
        trial = recipe_search.Trial(
            prepared=prepared,
            fp32=b.work / FP32_NAME,
            work=Path(tmp),
            calibration=_calibration_pixels(b),
            evaluation=b.eval_pixels,
            accept=[e.accept for e in b.split.evaluation],
            fp32_logits=result.fp32_logits,
            fp32_top1=result.fp32.top1,
            weights=isa.exact_int8_file(),
            gate=b.config.gate.model_copy(update={"max_top1_drop": b.max_top1_drop}),
        )
        found = recipe_search.search(trial, configured, q, reason)
    info = found.info.model_copy(
        update={"fp32_latency_ms_batch1": result.latency_ms_batch1.get("cpu/fp32")}
    )
    chosen = found.recipe
    if chosen is None or chosen == recipe:
        return result, recipe, info
    log.info("%s: recipe search chose %s: re-quantizing", b.name, info.chosen)
    outputs = {key: b.work / name for key, name in INT8_NAMES.items()}
    quantize.quantize(b.work / FP32_NAME, outputs, _calibration_pixels(b), chosen)
    state.recipe = chosen
    return _evaluate_files(b, True), chosen, info


def run_evaluate(b: Build) -> Manifest:
    state = b.load_state()
    if state.export is None or state.quantization is None:
        raise BuildError(f"{b.model_dir / STATE_NAME}: export or quantize has not run")
    recipe = state.recipe or configured_recipe(b.config)
    with b.timed("evaluate"):
        result = _evaluate_files(b, gate_applicable=not state.model.untrained)
        result, recipe, search = _search(b, state, result, recipe)
        served = isa.exact_int8_file()
        predictions = baseline.measure(b.work / INT8_NAMES[served], served, b.eval_pixels)
    phone = _phone_sizes(b, b.work / INT8_NAMES[served], untrained=state.model.untrained)
    state.stage_seconds.update(b.seconds)
    quantization = _quantization_info(b, recipe, search)
    failures = _failures(b, result) + photo_size.failures(phone, b.max_top1_drop)
    evaluation = _evaluation_info(b, result).model_copy(
        update={"prediction_baseline": predictions, "phone_sizes": phone, "passed": not failures}
    )
    manifest = _manifest(b, state, state.export, quantization, evaluation)
    _log_evaluation(b, result)
    text = report.render(manifest)
    if failures:
        kept = Path(tempfile.mkdtemp(prefix=f"imgcls-rejected-{b.name}-"))
        (kept / REJECTED_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
        (kept / report.REPORT_NAME).write_text(text)
        raise GateFailed(
            f"{b.name}: int8 failed the accuracy gate: {'; '.join(failures)} "
            f"(report and rejected manifest in {kept}; --out left as it was)"
        )
    (b.work / report.REPORT_NAME).write_text(text)
    write_manifest(b.work, manifest)
    log.info("%s: build report:\n%s", b.name, text)
    return manifest


def _phone_sizes(b: Build, int8_path: Path, untrained: bool) -> dict[str, PhoneSizeEvaluation]:
    """The served path at phone size (build/photo_size.py), timed as its own stage. Skipped for
    untrained weights: accuracy is chance there and the draft's agreement is not gated."""
    if b.options.phone_size_images == 0 or untrained:
        return {}
    with b.timed("phone_sizes"):
        return photo_size.evaluate_phone_sizes(
            b.work / FP32_NAME,
            int8_path,
            b.split.evaluation,
            b.spec,
            b.max_top1_drop,
            images=b.options.phone_size_images,
            cache=photo_size.default_cache(),
        )


def _failures(b: Build, result: evaluate.Evaluation) -> list[str]:
    failures = result.failures()
    floor = b.config.gate.min_top1_agreement
    if floor is not None:
        rows = [*result.int8.items(), *((f"{k} reference", p) for k, p in result.reference.items())]
        failures += [
            f"{name}: agreement {p.top1_agreement:.2f}% < {floor:g}%"
            for name, p in rows
            if p.top1_agreement < floor
        ]
    return failures


def _evaluation_info(b: Build, result: evaluate.Evaluation) -> EvaluationInfo:
    cpu = result.int8["cpu"]
    per_class = {}
    if b.folders is not None and result.fp32_logits is not None and result.int8_logits is not None:
        truth = [min(e.accept) for e in b.split.evaluation]
        per_class = evaluate.per_class(result.fp32_logits, result.int8_logits, truth, b.labels)
    return EvaluationInfo(
        dataset=b.split.dataset,
        images=len(b.split.evaluation),
        small=b.split.small,
        fp32=result.fp32,
        int8=cpu.int8,
        top1_agreement=cpu.top1_agreement,
        max_top1_drop_points=result.max_top1_drop,
        passed=_meets(b, result),
        gate_applicable=result.gate_applicable,
        int8_providers=result.int8,
        images_sha256=data.files_sha256(tuple(e.path for e in b.split.evaluation)),
        latency_ms_batch1=result.latency_ms_batch1,
        int8_file=isa.exact_int8_file(),
        int8_reference=result.reference,
        per_class=per_class,
        min_top1_agreement=b.config.gate.min_top1_agreement,
    )


def _log_evaluation(b: Build, result: evaluate.Evaluation) -> None:
    small = " (SMALL evaluation: package photos only)" if b.split.small else ""
    log.info(
        "%s: fp32 top-1 %.2f%% top-5 %.2f%%%s", b.name, result.fp32.top1, result.fp32.top5, small
    )
    served = isa.exact_int8_file()
    log.info("%s: this CPU computes %s exactly: %s", b.name, served, isa.describe(served))
    rows = [(f"{served} {name}", p) for name, p in result.int8.items()]
    rows += [(f"{file} reference", p) for file, p in result.reference.items()]
    for name, p in rows:
        log.info(
            "%s: int8 [%s] top-1 %.2f%% top-5 %.2f%% agreement %.2f%%",
            b.name,
            name,
            p.int8.top1,
            p.int8.top5,
            p.top1_agreement,
        )
    if not result.gate_applicable:
        log.warning("%s: untrained weights: the accuracy gate does not apply", b.name)
    log.info("%s: batch-1 latency ms %s", b.name, result.latency_ms_batch1)


def _data_info(b: Build) -> DataInfo | None:
    f = b.folders
    if f is None:
        return None
    assert b.config.data.dir is not None
    return DataInfo(
        root=str(b.config.data.dir),
        seed=b.config.data.seed,
        sha256=f.digest,
        classes={
            label: ClassData(
                files=c.files,
                calibration=c.calibration,
                evaluation=c.evaluation,
                unreadable=c.unreadable,
            )
            for label, c in f.counts.items()
        },
        unreadable=tuple(f"{p} ({reason})" for p, reason in f.unreadable),
    )


def _manifest(
    b: Build,
    state: BuildState,
    export_info: ExportInfo,
    quantization: QuantizationInfo,
    evaluation: EvaluationInfo,
) -> Manifest:
    p = b.config.preprocess
    labels_file = b.work / LABELS_NAME
    return Manifest(
        model=state.model,
        input=InputSpec(
            name=export.INPUT_NAME,
            shape=("batch", p.crop, p.crop, 3),
            dtype="uint8",
            layout="NHWC",
            resize_size=p.resize,
            crop_size=p.crop,
            interpolation="bilinear",
            mean=p.mean,
            std=p.std,
        ),
        output=OutputSpec(name=export.OUTPUT_NAME, num_classes=state.num_classes, kind="logits"),
        labels=LABELS_NAME,
        labels_sha256=hashlib.sha256(labels_file.read_bytes()).hexdigest(),
        files={
            "fp32": file_entry(b.work, b.work / FP32_NAME),
            **{key: file_entry(b.work, b.work / name) for key, name in INT8_NAMES.items()},
        },
        export=export_info,
        quantization=quantization,
        evaluation=evaluation,
        data=_data_info(b),
        versions=library_versions(),
        stage_seconds=state.stage_seconds,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def library_versions() -> dict[str, str]:
    names = (
        "torch",
        "torchvision",
        "onnx",
        "onnxruntime",
        "onnxruntime-openvino",
        "numpy",
        "pillow",
        "efficientnet-lite-pytorch",
    )
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


_STAGES = {
    "export": (run_export,),
    "quantize": (run_quantize,),
    "evaluate": (run_evaluate,),
    "all": (run_export, run_quantize, run_evaluate),
}


def load_build(options: BuildOptions) -> Build:
    """The config read and every input checked: the source's weights, the labels, the data
    (the slowest check, done before any export)."""
    config = config_file.load(options.config, data_dir=options.data_dir)
    if config.source.onnx is not None and options.weights is not None:
        raise BuildError(f"--weights applies to a torch source; {config.path} names an ONNX file")
    b = Build(config=config, options=options)
    _ = b.labels, b.torch
    _ = b.split  # find and check the data first: a bad folder fails in seconds, not after export
    b.warn_if_gate_below_resolution()
    return b


def run_build(options: BuildOptions) -> Path:
    b = load_build(options)
    earlier = None if options.stage in ("all", "export") else STATE_NAME
    with staging.staged(options.out, b.name, needs=earlier) as work:
        b.work = work
        for stage in _STAGES[options.stage]:
            stage(b)
    return b.model_dir
