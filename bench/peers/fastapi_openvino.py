"""A FastAPI + OpenVINO native service, as a peer (issue 10): the same int8 QDQ model file as the
service, read by OpenVINO's own runtime (the ``openvino`` package, no ONNX Runtime), compiled for
the CPU with the THROUGHPUT hint, no batching, one infer request per worker thread: decode +
inference run in Starlette's thread pool, each thread with its own infer request. It uses the
service's preprocessing, so it decodes the very same pixels.

    python -m bench.peers.fastapi_openvino --port 8003 --labels L --model-file F (the manifest's)
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bench.peers import parser, preprocess_spec, top3
from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.inference.preprocess import PreprocessSpec, preprocess


def compile_model(model_file: Path, spec: PreprocessSpec) -> Any:
    core = ov.Core()
    model = core.read_model(str(model_file))
    model.reshape([1, spec.crop_size, spec.crop_size, 3])  # static batch 1: no batching here
    return core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})


def create_app(
    compiled: Any, labels: list[str], name: str, spec: PreprocessSpec | None = None
) -> FastAPI:
    app = FastAPI()
    spec = spec or PreprocessSpec()
    local = threading.local()

    def infer_request() -> Any:
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        return local.request

    @app.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ready": True}  # compiled before serving began

    @app.post("/v1/classify")
    async def classify(request: Request) -> Any:
        if request.headers.get("content-type", "").startswith("multipart/"):
            form = await request.form()
            data = await form["file"].read()  # type: ignore[union-attr]
        else:
            data = await request.body()
        return await run_in_threadpool(work, data)  # anyio's pool: 40 threads by default

    def work(data: bytes) -> Any:
        try:
            pixels = preprocess(data, spec)
        except (BadImage, ImageTooLarge, UnsupportedMediaType) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        result = infer_request().infer({0: pixels[None]})
        return top3(name, labels, np.asarray(next(iter(result.values())))[0])

    return app


def main() -> None:
    args_parser = parser(__doc__, 8003)
    args_parser.add_argument("--model-file", type=Path, required=True, help="the manifest's int8")
    args = args_parser.parse_args()
    labels = args.labels.read_text().splitlines()
    compiled = compile_model(args.model_file, PreprocessSpec())
    app = create_app(compiled, labels, args.model, preprocess_spec(args))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
