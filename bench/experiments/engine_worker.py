"""One engine in its own process (``python -m bench.experiments.engine_worker``, started by
bench.experiments.engines), driven over stdin/stdout with JSON lines, so that its load time,
first inference and peak RSS are its own (a fresh process per engine) while the parent still
interleaves timing rounds across engines (fair to a machine whose speed drifts). Each command
names a Worker method and carries its arguments; one JSON reply each: prepare (builds the files
the engine loads, untimed, in a throwaway process), load (-> load_s, first_s, file_mb,
peak_rss_mb, rss_mb), time (-> ms), throughput (-> images_per_s, runs), rss; then quit. torch
is imported only by the torch engines, so the ORT engines' RSS does not include it."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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
TORCH_ENGINES = ("torch_eager", "torchscript")


def dynamic_int8_file(fp32: Path) -> Path:
    """The usual tutorial recipe: quantize_dynamic on the fp32 file, default options. Built once
    per fp32 file (keyed by its sha256 prefix)."""
    from bench.config import CACHE_DIR
    from service.model.manifest import sha256_file

    path = CACHE_DIR / f"{fp32.parent.name}.{sha256_file(fp32)[:12]}.int8.dynamic.onnx"
    if not path.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.onnx")
        quantize_dynamic(fp32, tmp, weight_type=QuantType.QUInt8)
        tmp.replace(path)
    return path


def engine_file(engine: str, model: str, files: dict[str, str]) -> Path:
    """What a deployment ships for this engine (its size is reported), built when missing."""
    if engine in TORCH_ENGINES:
        from bench.torch_models import torchscript_file, weights_file

        return torchscript_file(model) if engine == "torchscript" else weights_file(model)
    if engine == "ort_int8_dynamic":
        return dynamic_int8_file(Path(files["fp32"]))
    return Path(files["fp32" if engine == "ort_fp32" else "int8"])


def load_engine(engine: str, model: str, path: Path, threads: int) -> RunFn:
    if engine not in TORCH_ENGINES:
        # The server's own session factory: the engines table measures what the service runs.
        from build import sessions

        sess = sessions.session(path, "openvino" if engine == "openvino_int8" else "cpu", threads)
        return lambda batch: sessions.run(sess, batch)
    import torch

    from bench import torch_models

    torch.set_num_threads(threads)
    script = engine == "torchscript"
    net = torch_models.load_torchscript(model) if script else torch_models.load_eager(model)

    def run(batch: Batch) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            return net(torch.from_numpy(batch)).numpy()  # type: ignore[no-any-return]

    return run


class Worker:
    """The commands' handlers, one method each, named by the command's "op", e.g.
    {"op": "time", "batch": 1, "runs": 20} -> {"ms": [...]}."""

    run: RunFn
    images: list[Batch]
    cursor = 0

    def batch(self, size: int) -> Batch:
        picked = [self.images[(self.cursor + i) % len(self.images)] for i in range(size)]
        self.cursor += size
        return np.stack(picked)

    def prepare(self, engine: str, model: str, files: dict[str, str]) -> dict[str, Any]:
        engine_file(engine, model, files)
        return {}

    def load(
        self, engine: str, model: str, files: dict[str, str], threads: int, images: list[str]
    ) -> dict[str, Any]:
        from service.inference.preprocess import PreprocessSpec, preprocess

        self.images = [preprocess(Path(p).read_bytes(), PreprocessSpec()) for p in images]
        start = time.perf_counter()
        path = engine_file(engine, model, files)
        self.run = load_engine(engine, model, path, threads)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        self.run(self.batch(1))
        first_s = time.perf_counter() - start
        file_mb = path.stat().st_size / 1e6
        return {"load_s": load_s, "first_s": first_s, "file_mb": file_mb, **self.rss()}

    def rss(self) -> dict[str, Any]:
        pages = int(Path("/proc/self/statm").read_text().split()[1])  # resident
        rss_mb = pages * resource.getpagesize() / 2**20
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"peak_rss_mb": peak_rss_mb, "rss_mb": rss_mb}

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
        return {"images_per_s": runs * batch / (time.perf_counter() - start), "runs": runs}


OPS = ("prepare", "load", "time", "throughput", "rss")


def main() -> None:
    worker = Worker()
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            return
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        print(json.dumps(getattr(worker, op)(**command)), flush=True)


if __name__ == "__main__":
    main()
