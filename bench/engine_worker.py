"""One engine in its own process, driven over stdin/stdout with JSON lines, so that its load
time, first inference and peak RSS are its own (a fresh process per engine) while the parent
still interleaves timing rounds across engines (fair to a machine whose speed drifts).

    python -m bench.engine_worker --model resnet18 --engine ort_int8_static --threads 2 \
        --fp32-file F --int8-file F --data-dir ../shared/data [--prepare-only]

Replies: {"event": "ready", ...} once loaded, then one reply per command:
    {"op": "time", "batch": 1, "runs": 20}                -> {"ms": [...]}
    {"op": "throughput", "batch": 8, "seconds": 1.0}        -> {"images_per_s": ..., "runs": n}
    {"op": "rss"}                                          -> {"peak_rss_mb": ..., "rss_mb": ...}
    {"op": "quit"}
torch is imported only by the torch engines, so the ORT engines' RSS does not include it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.images import load_samples

Batch = npt.NDArray[np.uint8]
RunFn = Callable[[Batch], npt.NDArray[np.float32]]

ENGINES: dict[str, str] = {
    "torch_eager": "PyTorch eager fp32",
    "torchscript": "TorchScript fp32 (trace + freeze)",
    "ort_fp32": "ONNX Runtime fp32",
    "ort_int8_dynamic": "ORT int8 dynamic quantization (the write-up's recipe)",
    "ort_int8_static": "ORT int8 static QDQ U8S8 (ours), CPU EP",
    "openvino_int8": "ORT + OpenVINO EP, int8 U8S8 (ours)",
}


@dataclass(frozen=True)
class Loaded:
    run: RunFn
    file: Path  # what a deployment ships for this engine (its size is reported)


def dynamic_int8_file(fp32: Path) -> Path:
    """The usual tutorial recipe: quantize_dynamic on the fp32 file, default options. Built once
    per fp32 file (keyed by its sha256 prefix)."""
    from bench.config import CACHE_DIR
    from service.manifest import sha256_file

    path = CACHE_DIR / f"{fp32.parent.name}.{sha256_file(fp32)[:12]}.int8.dynamic.onnx"
    if not path.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.onnx")
        quantize_dynamic(fp32, tmp, weight_type=QuantType.QUInt8)
        tmp.replace(path)
    return path


def ort_session(path: Path, threads: int, openvino: bool) -> RunFn:
    # The server's own session factory: the engines table measures what the service runs.
    from service.providers import CPU, OPENVINO
    from service.runner import create_session

    session = create_session(path, OPENVINO if openvino else CPU, threads)
    input_name = session.get_inputs()[0].name

    def run(batch: Batch) -> npt.NDArray[np.float32]:
        return session.run(None, {input_name: batch})[0]  # type: ignore[no-any-return]

    return run


def _torch_engine(model: str, threads: int, script: bool) -> Loaded:
    import torch

    from bench import torch_models

    torch.set_num_threads(threads)
    net = torch_models.load_torchscript(model) if script else torch_models.load_eager(model)
    file = torch_models.torchscript_file(model) if script else torch_models.weights_file(model)

    def run(batch: Batch) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            return net(torch.from_numpy(batch)).numpy()  # type: ignore[no-any-return]

    return Loaded(run, file)


def load_engine(engine: str, model: str, files: dict[str, Path], threads: int) -> Loaded:
    """``files``: the model's "fp32" and "int8" ONNX files, as its manifest names them."""
    if engine in ("torch_eager", "torchscript"):
        return _torch_engine(model, threads, script=engine == "torchscript")
    if engine == "ort_int8_dynamic":
        path = dynamic_int8_file(files["fp32"])
    else:
        path = files["fp32" if engine == "ort_fp32" else "int8"]
    return Loaded(ort_session(path, threads, openvino=engine == "openvino_int8"), path)


def prepare(engine: str, model: str, fp32: Path) -> None:
    """Build the derived file an engine loads (untimed, outside the measured process)."""
    if engine == "ort_int8_dynamic":
        dynamic_int8_file(fp32)
    elif engine in ("torch_eager", "torchscript"):
        from bench import torch_models

        torch_models.weights_file(model)
        if engine == "torchscript":
            torch_models.torchscript_file(model)


def _pixels(data_dir: Path, count: int) -> list[npt.NDArray[np.uint8]]:
    from service.preprocess import PreprocessSpec, preprocess

    return [preprocess(s.jpeg, PreprocessSpec()) for s in load_samples(data_dir, count)]


def _rss_mb() -> dict[str, float]:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_mb": resident_pages * resource.getpagesize() / 2**20,
    }


class Worker:
    def __init__(self, loaded: Loaded, images: list[npt.NDArray[np.uint8]]) -> None:
        self.run = loaded.run
        self.images = images
        self.cursor = 0

    def batch(self, size: int) -> Batch:
        picked = [self.images[(self.cursor + i) % len(self.images)] for i in range(size)]
        self.cursor += size
        return np.stack(picked)

    def time(self, batch: int, runs: int) -> dict[str, Any]:
        times = []
        for _ in range(runs):
            inputs = self.batch(batch)
            start = time.perf_counter()
            self.run(inputs)
            times.append((time.perf_counter() - start) * 1000)
        return {"ms": times}

    def throughput(self, batch: int, seconds: float, min_runs: int = 2) -> dict[str, Any]:
        inputs = self.batch(batch)
        self.run(inputs)  # a new batch shape may compile or allocate: not counted
        runs, start = 0, time.perf_counter()
        while runs < min_runs or time.perf_counter() - start < seconds:
            self.run(inputs)
            runs += 1
        elapsed = time.perf_counter() - start
        return {"images_per_s": runs * batch / elapsed, "runs": runs}

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "time":
            return self.time(int(command["batch"]), int(command["runs"]))
        if op == "throughput":
            return self.throughput(int(command["batch"]), float(command["seconds"]))
        if op == "rss":
            return _rss_mb()
        raise ValueError(f"unknown op {op!r}")


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(args: argparse.Namespace) -> None:
    images = _pixels(args.data_dir, args.images)
    start = time.perf_counter()
    files = {"fp32": args.fp32_file, "int8": args.int8_file}
    loaded = load_engine(args.engine, args.model, files, args.threads)
    load_s = time.perf_counter() - start
    worker = Worker(loaded, images)
    start = time.perf_counter()
    worker.run(worker.batch(1))
    first_s = time.perf_counter() - start
    _reply(
        {
            "event": "ready",
            "load_s": load_s,
            "first_s": first_s,
            "file_mb": loaded.file.stat().st_size / 1e6,
            **_rss_mb(),
        }
    )
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            return
        _reply(worker.handle(command))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--engine", required=True, choices=list(ENGINES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fp32-file", type=Path, required=True)
    parser.add_argument("--int8-file", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args(argv)
    if args.prepare_only:
        prepare(args.engine, args.model, args.fp32_file)
        return
    serve(args)


if __name__ == "__main__":
    main()
