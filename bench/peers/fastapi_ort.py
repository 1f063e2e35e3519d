"""A plain FastAPI + ONNX Runtime service, as a peer: the same int8 model file as the service,
the CPU provider with ORT's default session options, no batching, and decode + inference inline
in an ``async def`` handler (the common tutorial shape: one request at a time owns the loop).
It uses the service's preprocessing, so both decode the very same pixels.

    python -m bench.peers.fastapi_ort --port 8002 --labels L --model-file F (from the manifest)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench.peers import parser, preprocess_spec, top3
from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.inference.preprocess import PreprocessSpec, preprocess


def create_app(
    session: ort.InferenceSession, labels: list[str], name: str, spec: PreprocessSpec | None = None
) -> FastAPI:
    app = FastAPI()
    input_name = session.get_inputs()[0].name
    spec = spec or PreprocessSpec()

    @app.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ready": True}  # the session was created before serving began

    @app.post("/v1/classify")
    async def classify(request: Request) -> Any:
        if request.headers.get("content-type", "").startswith("multipart/"):
            form = await request.form()
            data = await form["file"].read()  # type: ignore[union-attr]
        else:
            data = await request.body()
        try:
            pixels = preprocess(data, spec)
        except (BadImage, ImageTooLarge, UnsupportedMediaType) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return top3(name, labels, session.run(None, {input_name: pixels[None]})[0][0])

    return app


def main() -> None:
    args_parser = parser(__doc__, 8002)
    args_parser.add_argument("--model-file", type=Path, required=True, help="the manifest's int8")
    args = args_parser.parse_args()
    labels = args.labels.read_text().splitlines()
    session = ort.InferenceSession(str(args.model_file), providers=["CPUExecutionProvider"])
    app = create_app(session, labels, args.model, preprocess_spec(args))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
