"""The build report: the manifest as a page a person reads (build_report.md beside it, and the
build's last log lines): data per class, per-class accuracy, fp32 vs int8 per provider, the
gate, the served path at phone size, and what the recipe search tried and chose."""

from __future__ import annotations

from collections.abc import Iterable

from service.model.manifest import Manifest, PhoneSizeEvaluation, RecipeSearch

REPORT_NAME = "build_report.md"


def _table(head: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(m: Manifest) -> str:
    ev = m.evaluation
    lines = [
        f"# Build report: {m.model.name} {m.model.version}",
        "",
        f"- source: {m.model.architecture} ({m.model.weights_source})",
        f"- classes: {m.output.num_classes}; input {m.input.crop_size}x{m.input.crop_size} "
        f"(resize {m.input.resize_size}), mean {list(m.input.mean)}, std {list(m.input.std)}",
        f"- export: {m.export.exporter}; max |logit| difference {m.export.max_abs_logit_diff:.2e}"
        f" on {m.export.diff_images} images",
        f"- calibration: {m.quantization.calibration_method}, {m.quantization.calibration_images}"
        f" images; {len(m.quantization.nodes_excluded)} node(s) kept in float",
    ]
    if m.data is not None:
        lines += [
            "",
            f"## Data: {m.data.root} (seed {m.data.seed}, sha256 {m.data.sha256[:16]}...)",
            "",
        ]
        lines += _table(
            ("class", "files", "calibration", "evaluation", "unreadable"),
            (
                (k, c.files, c.calibration, c.evaluation, c.unreadable)
                for k, c in m.data.classes.items()
            ),
        )
        lines += [f"- skipped: {u}" for u in m.data.unreadable]
    if ev is not None:
        lines += ["", f"## Accuracy on the evaluation split ({ev.images} images)", ""]
        rows = [("fp32", "cpu", _pct(ev.fp32.top1), _pct(ev.fp32.top5), "-")]
        rows += [
            (
                f"int8 ({ev.int8_file})",
                name,
                _pct(p.int8.top1),
                _pct(p.int8.top5),
                _pct(p.top1_agreement),
            )
            for name, p in ev.int8_providers.items()
        ]
        rows += [
            (
                f"int8 ({key})",
                "exact reference",
                _pct(p.int8.top1),
                _pct(p.int8.top5),
                _pct(p.top1_agreement),
            )
            for key, p in ev.int8_reference.items()
        ]
        lines += _table(("model", "provider", "top-1 %", "top-5 %", "agreement with fp32 %"), rows)
        gate = f"int8 top-1 at most {ev.max_top1_drop_points:g} points below fp32"
        if ev.min_top1_agreement is not None:
            gate += f", agreement at least {ev.min_top1_agreement:g}%"
        verdict = "PASSED" if ev.passed else "FAILED"
        if not ev.gate_applicable:
            verdict = "not applicable (untrained weights)"
        lines += ["", f"Gate: {gate}: **{verdict}**"]
        if ev.per_class:
            lines += ["", "## Per class (top-1 %, CPU provider)", ""]
            lines += _table(
                ("class", "images", "fp32", "int8"),
                (
                    (k, c.images, _pct(c.fp32_top1), _pct(c.int8_top1))
                    for k, c in ev.per_class.items()
                ),
            )
        if ev.latency_ms_batch1:
            lines += [
                "",
                "Batch-1 latency, median ms: "
                + ", ".join(f"{k} {v:.2f}" for k, v in ev.latency_ms_batch1.items()),
            ]
    if ev is not None and ev.phone_sizes:
        lines += ["", *phone_size_lines(ev.phone_sizes)]
    if m.quantization.search is not None:
        lines += ["", *_search(m.quantization.search)]
    return "\n".join(lines) + "\n"


def _search(s: RecipeSearch) -> list[str]:
    lines = [
        "## Recipe search",
        "",
        f"{'Ran' if s.ran else 'Not run'}: {s.reason}. "
        f"Target agreement {s.target_top1_agreement:g}%."
        + (f" fp32 batch-1 {s.fp32_latency_ms_batch1:.2f} ms." if s.fp32_latency_ms_batch1 else ""),
        "",
    ]
    rows = [
        (
            st.stage,
            st.label,
            _pct(st.top1),
            _pct(st.top1_drop),
            _pct(st.top1_agreement),
            _pct(st.latency_ms_batch1),
            "yes" if st.meets_gate else ("skipped: " + st.skipped if st.skipped else "no"),
        )
        for st in s.steps
    ]
    lines += _table(
        ("step", "recipe", "int8 top-1 %", "drop", "agreement %", "ms b1", "meets gate"), rows
    )
    lines += ["", f"Chosen: {s.chosen}"]
    return lines


def phone_size_lines(phone_sizes: dict[str, PhoneSizeEvaluation]) -> list[str]:
    """The served path at phone size against the full decode, per size, model and provider;
    "drop" is the gated figure: fp32's full-decode top-1 minus served int8's."""
    if not phone_sizes:
        return []
    first = next(iter(phone_sizes.values()))
    draft = "none" if first.draft_margin is None else f"{first.draft_margin:g}x"
    lines = [
        f"## Phone-size photos ({first.images} evaluation images upscaled, JPEG q90, served "
        f"JPEG draft: {draft})",
        "",
        "| size | model | provider | top-1 served | top-1 full decode | agreement | drop |",
        "|---|---|---|---|---|---|---|",
    ]
    for ev in phone_sizes.values():
        lines.append(
            f"| {ev.example_size} | fp32 | cpu | {ev.fp32.top1:.2f} | "
            f"{ev.fp32_full_decode.top1:.2f} | {ev.fp32_draft_agreement:.2f} | - |"
        )
        lines += [
            f"| {ev.example_size} | int8 | {name} | {p.int8.top1:.2f} | "
            f"{p.int8_full_decode.top1:.2f} | {p.draft_agreement:.2f} | "
            f"{p.top1_drop_points:.2f}{'' if p.passed else ' FAIL'} |"
            for name, p in ev.int8_providers.items()
        ]
    return lines
