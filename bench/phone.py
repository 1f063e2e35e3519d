"""The phone-size workload (issue 19): the labeled images made phone photos (build.phone_photos:
12 MP and ~3 MP JPEG at quality 90, 12 MP HEIC as an iPhone writes it), sent as raw bodies to the
service and to the FastAPI peers on the harness of the 500x375 peers section (bench.servers),
closed loop; the service at each JPEG draft policy; issue 19's targets against FastAPI +
OpenVINO native (bench/targets.toml [phone]).

The peers decode every pixel (``--draft-margin 0``), as a FastAPI app that opens an upload with
Pillow does: the draft is the service's own design (issue 19 measured them so). For information,
the OpenVINO peer is also run with a 2x draft.

    python -m bench.phone [--quick] [--out DIR]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from bench import servers
from bench.config import BenchConfig, image_paths, run_benchmark
from bench.report import TARGETS, Section, bar, fmt, table, verdict
from bench.servers import Load, ServerResult, ServerSpec
from build.phone_photos import phone_heics, phone_jpegs
from build.photo_size import default_cache
from service.inference.preprocess import DRAFT_MARGIN

MODEL = "resnet18"  # the peers' model, as in the 500x375 section (random weights: speed only)
PHOTOS, PHOTOS_QUICK = 48, 4
TARGET = TARGETS["phone"]
POLICIES = {"1x": 1.0, "2x": 2.0, "3x": 3.0, "none": 0.0}  # IMGCLS_JPEG_DRAFT_MARGIN
SERVICE = "service"
OPENVINO, PLAIN = "fastapi + openvino", "fastapi + ort"
OPENVINO_DRAFT = "fastapi + openvino (draft 2x)"
PEER_DRAFT = 2.0  # the OpenVINO peer given the fastest draft within the model's noise floor


@dataclass(frozen=True)
class Workload:
    name: str
    size: str  # build.phone_photos.PHONE_SIZES key
    kind: str  # "jpeg" | "heic"
    content_type: str
    load: Load
    servers: tuple[str, ...]  # which of SERVICE, OPENVINO, OPENVINO_DRAFT, PLAIN run it


WORKLOADS = (
    Workload(
        "12 MP JPEG", "12mp", "jpeg", "image/jpeg", Load((1, 16), 15.0, 2.0),
        (SERVICE, OPENVINO, PLAIN, OPENVINO_DRAFT),
    ),
    Workload(
        "3 MP JPEG", "3mp", "jpeg", "image/jpeg", Load((1, 16), 10.0, 2.0), (SERVICE, OPENVINO)
    ),
    # ~0.5-1 s of CPU per photo: c=4 already queues seconds on 2 cores
    Workload(
        "12 MP HEIC", "12mp", "heic", "image/heic", Load((1, 4), 20.0, 3.0), (SERVICE, OPENVINO)
    ),
)  # fmt: skip
QUICK = Load((1,), 1.0, 0.5)


def photos_folder(cfg: BenchConfig, workload: Workload) -> Path:
    """The workload's photos as files the load generator sends (made once, then cached)."""
    sources = image_paths(cfg.data_dir, PHOTOS_QUICK if cfg.quick else PHOTOS)
    make = phone_jpegs if workload.kind == "jpeg" else phone_heics
    folder = cfg.out_dir / "phone" / f"{workload.size}-{workload.kind}"
    folder.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(make(sources, workload.size, default_cache())):
        (folder / f"{index:03d}.{workload.kind}").write_bytes(data)
    return folder


def spec_for(cfg: BenchConfig, server: str, draft: float = DRAFT_MARGIN or 0.0) -> ServerSpec:
    if server == SERVICE:
        spec = servers.service_spec(cfg, MODEL, "auto", None, name=SERVICE)
        env = spec.env | {"IMGCLS_JPEG_DRAFT_MARGIN": str(draft)}
        return dataclasses.replace(spec, env=env, description=f"{spec.description}, draft {draft}")
    peer = "fastapi_ort" if server == PLAIN else "fastapi_openvino"
    spec = servers.peer_spec(cfg, peer, MODEL)
    margin = PEER_DRAFT if server == OPENVINO_DRAFT else 0.0
    what = f"JPEG draft {margin:g}x" if margin else "every pixel decoded"
    return dataclasses.replace(
        spec,
        name=server,
        description=f"{spec.description}; {what}",
        args=(*spec.args, f"--draft-margin={margin}"),
    )


def measure(cfg: BenchConfig) -> dict[str, dict[str, ServerResult]]:
    """workload -> server (or "service <policy>" for the draft policies) -> result."""
    runs = [(w, s) for w in WORKLOADS for s in w.servers]
    drafts = [] if cfg.quick else [p for p in POLICIES if (POLICIES[p] or None) != DRAFT_MARGIN]
    results: dict[str, dict[str, ServerResult]] = {w.name: {} for w in WORKLOADS}
    total = sum(len((QUICK if cfg.quick else w.load).concurrencies) for w, _ in runs)
    total += len(drafts) * len(WORKLOADS[0].load.concurrencies)
    with bar(total, "phone") as progress:
        for workload in WORKLOADS:
            folder = photos_folder(cfg, workload)
            bodies = (f"--bodies={folder}", f"--content-type={workload.content_type}")
            plan = QUICK if cfg.quick else workload.load
            for server in workload.servers:
                spec = spec_for(cfg, server)
                result = servers.measure_server(cfg, spec, plan, progress, bodies)
                results[workload.name][server] = result
            if workload is WORKLOADS[0]:
                for policy in drafts:
                    spec = spec_for(cfg, SERVICE, POLICIES[policy])
                    result = servers.measure_server(cfg, spec, plan, progress, bodies)
                    results[workload.name][f"{SERVICE} {policy}"] = result
    return results


def _row(workload: str, name: str, result: ServerResult) -> list[object]:
    c1, best = result.at_concurrency(1), result.best()
    return [
        workload,
        name,
        fmt(c1.latency_ms["p50"]) if c1 else "-",
        fmt(c1.latency_ms["p99"]) if c1 else "-",
        f"{fmt(best.throughput_rps)} ({best.load})",
        fmt(best.latency_ms["p50"]),
        fmt(best.server_cpu_ms_per_request),
        sum(best.errors.values()),
    ]


def target_rows(results: dict[str, dict[str, ServerResult]]) -> list[list[object]]:
    twelve = results[WORKLOADS[0].name]
    service, peer = twelve[SERVICE], twelve[OPENVINO]
    ratio = service.best().throughput_rps / peer.best().throughput_rps
    c1_service, c1_peer = service.c1_p50() or float("nan"), peer.c1_p50() or float("nan")
    c1 = c1_service / c1_peer
    wanted_tput, wanted_c1 = TARGET["c16_vs_openvino_min"], TARGET["c1_p50_vs_openvino_max"]
    return [
        [
            "12 MP JPEG throughput vs FastAPI + OpenVINO",
            f">= {wanted_tput:g}x",
            f"{fmt(service.best().throughput_rps)} vs {fmt(peer.best().throughput_rps)} req/s = "
            f"{ratio:.2f}x",
            verdict(ratio >= wanted_tput),
        ],
        [
            "12 MP JPEG c=1 p50 vs FastAPI + OpenVINO",
            f"<= {wanted_c1:g}x",
            f"{fmt(c1_service)} vs {fmt(c1_peer)} ms = {c1:.2f}x",
            verdict(c1 <= wanted_c1),
        ],
    ]


def render(cfg: BenchConfig, results: dict[str, dict[str, ServerResult]], section: Section) -> None:
    section.add(
        f"ResNet-18 int8 (random weights: speed only), {PHOTOS_QUICK if cfg.quick else PHOTOS} "
        "labeled images made phone photos (build/phone_photos.py: upscaled, seeded grain; JPEG "
        "q90, HEIC q66 in 512-pixel tiles), raw bodies cycled, closed loop, one load-generator "
        "process per step. The service runs its default JPEG draft (margin "
        f"{'none' if DRAFT_MARGIN is None else f'{DRAFT_MARGIN:g}x'}; 'service <policy>' rows: "
        "IMGCLS_JPEG_DRAFT_MARGIN set); the peers decode every pixel unless marked (draft)."
    )
    headers = ["workload", "server", "c=1 p50 ms", "c=1 p99 ms", "best req/s", "p50 ms at best"]
    headers += ["server CPU ms/req at best", "errors"]
    rows = [
        _row(workload, name, result)
        for workload, by_server in results.items()
        for name, result in by_server.items()
    ]
    section.add(table(headers, rows))
    section.add(servers.steps_table([r for by in results.values() for r in by.values()]))
    if not cfg.quick:
        targets = table(["target", "wanted", "measured", "verdict"], target_rows(results))
        section.body += ["### Issue 19 targets", targets]
        section.summary += ["### Issue 19 targets (phone-size photos, same harness and run)"]
        section.summary.append(targets)


def run(cfg: BenchConfig) -> Section:
    section = Section("phone", "Phone-size photos (12 MP and 3 MP JPEG, 12 MP HEIC)")
    if not cfg.built([MODEL], section):
        return section
    results = measure(cfg)
    section.data = {"results": results}
    render(cfg, results, section)
    return section


if __name__ == "__main__":
    run_benchmark(run, __doc__)
