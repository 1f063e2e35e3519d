"""The peers benchmark (``python -m bench.peers [--quick] [--out DIR]``): on one harness
(bench.servers), images and run, the service with its defaults, FastAPI + OpenVINO native,
BentoML + ONNX Runtime with adaptive batching, the plain FastAPI + ONNX Runtime peer and the
write-up's Flask + TorchScript architecture (the servers beside this file), closed loop at
concurrency 1 to 64, server CPU per request; then the issue-4 targets (ResNet-18 saturation and
c=1 p50 against the plain peer and the write-up's) and issue 10's (against the OpenVINO-native
peer, and CPU per request), bench/targets.toml; a missed target is reported with how much, and
where the time goes."""

from __future__ import annotations

from bench import servers
from bench.config import BenchConfig
from bench.loadgen.http1 import SENDERS
from bench.report import TARGETS, Section, bar, bar_plot, fmt, table, verdict
from bench.servers import Load, ServerResult, breakdown
from service.model import int8_weights as isa

MODEL = "resnet18"  # the issues' targets are stated for ResNet-18
PEERS, LEAN = TARGETS["peers"], TARGETS["peers_lean"]
PEERS_FULL = Load((1, 4, 16, 64), 4.0, 1.5)
PEERS_QUICK = Load((1,), 1.0, 0.3)
# The servers of the peers benchmark, by the name servers.peer_spec gives them; the write-up's
# Flask comes last (the "x write-up" column divides by it).
SERVICE, OPENVINO, BENTOML = "service (defaults)", "fastapi + openvino", "bentoml + ort"
PLAIN, WRITEUP = "fastapi + ort", "flask + torchscript"
PEER_ORDER = ("fastapi_openvino", "bentoml_ort", "fastapi_ort", "flask_torchscript")


def _saturation_row(
    what: str, service: ServerResult, peer: ServerResult, wanted: float | None
) -> list[object]:
    """A saturation ratio against a peer: judged against ``wanted``, or None for information."""
    ratio = service.saturation_rps / peer.saturation_rps
    cell = f"{fmt(service.saturation_rps)} vs {fmt(peer.saturation_rps)} = {ratio:.2f}x"
    if wanted is None:
        return [what, "-", cell, "(information)"]
    return [what, f">= {wanted:g}x", cell, _judged(ratio >= wanted, f"{wanted / ratio:.2f}x")]


def peer_target_rows(results: list[ServerResult]) -> tuple[list[list[object]], bool]:
    """Issue 4's targets (bench/targets.toml [peers])."""
    by_name = {r.name: r for r in results}
    service, plain, writeup = by_name[SERVICE], by_name[PLAIN], by_name[WRITEUP]
    c1_service, c1_plain = service.c1_p50(), plain.c1_p50()
    wanted = PEERS["c1_p50_vs_plain_max"]
    c1_ok = c1_service is not None and c1_plain is not None and c1_service <= wanted * c1_plain
    miss = "" if c1_ok or not c1_plain or not c1_service else f" by {c1_service - c1_plain:.1f} ms"
    c1 = f"{fmt(c1_service)} vs {fmt(c1_plain)} ms"
    rows: list[list[object]] = [
        _saturation_row(
            "saturation vs write-up architecture",
            *(service, writeup, PEERS["saturation_vs_writeup_min"]),
        ),
        _saturation_row(
            "saturation vs plain FastAPI + ORT", service, plain, PEERS["saturation_vs_plain_min"]
        ),
        ["c=1 p50 vs plain FastAPI + ORT", f"<= {wanted:.1f}x", c1, verdict(c1_ok) + miss],
    ]
    return rows, all(str(row[3]).startswith("PASS") for row in rows)


def _c1_ratio(service: ServerResult, peer: ServerResult) -> tuple[str, float]:
    """'a vs b ms = r x' for the c=1 p50s, and r (NaN when a step is missing)."""
    mine, theirs = service.c1_p50() or float("nan"), peer.c1_p50() or float("nan")
    ratio = mine / theirs if theirs else float("nan")
    return f"{fmt(mine)} vs {fmt(theirs)} ms = {fmt(ratio, 2)}x", ratio


def _judged(ok: bool, miss: str) -> str:
    return verdict(ok) + ("" if ok else f" by {miss}")


def lean_target_rows(results: list[ServerResult], amx: bool) -> list[list[object]]:
    """Issue 10's targets (bench/targets.toml [peers_lean]) against the OpenVINO-native peer;
    the CPU bound only holds on a machine with AMX (``amx``), elsewhere its row states the
    figure. Then the BentoML peer's ratios, for information."""
    by_name = {r.name: r for r in results}
    service, openvino, bentoml = by_name[SERVICE], by_name[OPENVINO], by_name[BENTOML]
    p50_max = LEAN["c1_p50_vs_openvino_max"]
    c1_cell, c1 = _c1_ratio(service, openvino)
    best, cpu_max = service.best(), LEAN["cpu_ms_per_request_max"]
    cpu = best.server_cpu_ms_per_request
    cpu_cell = f"{fmt(cpu)} ms ({best.load}; the OpenVINO peer: "
    cpu_cell += f"{fmt(openvino.best().server_cpu_ms_per_request)} ms)"
    bento_c1_cell, _ = _c1_ratio(service, bentoml)
    return [
        _saturation_row("saturation vs FastAPI + OpenVINO native", service, openvino,
                        LEAN["saturation_vs_openvino_min"]),
        ["c=1 p50 vs FastAPI + OpenVINO native", f"<= {p50_max:g}x", c1_cell,
         _judged(c1 <= p50_max, f"{c1 - p50_max:.2f}x")],
        ["server CPU per request at saturation, on a machine with AMX", f"<= {cpu_max:g} ms",
         cpu_cell, _judged(cpu <= cpu_max, f"{cpu - cpu_max:.1f} ms") if amx else "n/a: no AMX"],
        _saturation_row("saturation vs BentoML + ORT (adaptive batching)", service, bentoml,
                        None),
        ["c=1 p50 vs BentoML + ORT (adaptive batching)", "-", bento_c1_cell, "(information)"],
    ]  # fmt: skip


def measure_peers(cfg: BenchConfig, plan: Load) -> list[ServerResult]:
    servers.prepare_flask(cfg)
    specs = [servers.service_spec(cfg, MODEL, "auto", None, name=SERVICE)]
    specs += [servers.peer_spec(cfg, peer, MODEL) for peer in PEER_ORDER]
    with bar(len(specs) * len(plan.concurrencies), "peers") as progress:
        return [servers.measure_server(cfg, spec, plan, progress) for spec in specs]


def _summary_row(result: ServerResult, writeup: float) -> list[object]:
    best = result.best()
    return [
        result.name,
        fmt(result.saturation_rps),
        f"{result.saturation_rps / writeup:.1f}x",
        fmt(result.c1_p50()),
        f"{fmt(best.server_cpu_ms_per_request)} ({best.load})",
        fmt(max(s.server_peak_rss_mb for s in result.steps), 0),
    ]


def render_peers(
    cfg: BenchConfig, plan: Load, results: list[ServerResult], section: Section
) -> None:
    section.add(
        f"Closed loop, one load-generator process per step ({SENDERS[cfg.client].about}, raw JPEG "
        f"bodies), {plan.duration_s} s per concurrency. The Flask peer runs on Flask's own "
        "development server (threaded=True), as the write-up serves it; ResNet-18 weights are "
        "random (speed only). Server CPU per request = the server's CPU (cores, psutil on its "
        "process tree, sampled every 50 ms) / its req/s over the same step."
    )
    section.add("\n".join(f"- **{r.name}**: {r.description}" for r in results))
    section.add(servers.steps_table(results))
    headers = ["server", "saturation req/s", "x write-up", "c=1 p50 ms"]
    headers += ["server CPU ms/req at saturation", "peak RSS MB"]
    writeup = results[-1].saturation_rps
    section.add(table(headers, [_summary_row(r, writeup) for r in results]))
    targets = table(["target", "wanted", "measured", "verdict"], section.data["targets"])
    section.body += ["### Issue 4 targets", targets]
    section.summary += ["### Issue 4 targets (service vs peers, same harness and run)", targets]
    lean = table(["target", "wanted", "measured", "verdict"], section.data["lean_targets"])
    amx = "has AMX" if section.data["amx"] else "has no AMX: the CPU bound is stated, not judged"
    lean_title = "### Issue 10 targets (service vs FastAPI + OpenVINO native, same run)"
    section.body += ["### Issue 10 targets", f"This machine {amx}.", lean]
    section.summary += [lean_title, f"This machine {amx}.", lean]
    # A missed target: the service at c=1 and at its best, each peer at its best.
    if not (section.data["passed"] and section.data["lean_passed"]):
        section.add("Where the time goes (measured; phases from the service's Server-Timing):")
        service, steps = results[0], [(r, r.best()) for r in results]
        steps.insert(0, (service, service.at_concurrency(1) or service.best()))
        section.add("\n".join(f"- {breakdown(r.name, s)}" for r, s in steps))
    title = "ResNet-18 over HTTP: p50 latency vs throughput\n(closed loop; points = concurrency)"
    path = cfg.out_dir / "peers_latency_vs_throughput.png"
    section.plots.append(servers.latency_plot(path, results, "p50", title))
    cpu = {r.name: r.best().server_cpu_ms_per_request for r in results}
    title = "ResNet-18 over HTTP: server CPU per request at saturation (lower is better)"
    path = cfg.out_dir / "peers_cpu_per_request.png"
    section.plots.append(bar_plot(path, cpu, title, "server CPU ms per request"))


def run(cfg: BenchConfig) -> Section:
    plan = PEERS_QUICK if cfg.quick else PEERS_FULL
    section = Section("peers", "Peers on the same harness (ResNet-18, same images, same run)")
    if not cfg.built([MODEL], section):
        return section
    results = measure_peers(cfg, plan)
    rows, passed = peer_target_rows(results)
    amx = "amx_int8" in isa.cpu_flags()  # the CPU figure is for AMX's int8 tiles
    section.data = {"plan": plan, "servers": results, "amx": amx}
    section.data |= {"targets": rows, "passed": passed}
    lean = lean_target_rows(results, amx)
    lean_passed = not any(str(row[3]).startswith("MISS") for row in lean)
    section.data |= {"lean_targets": lean, "lean_passed": lean_passed}
    render_peers(cfg, plan, results, section)
    return section
