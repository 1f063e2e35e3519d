"""The write-up's architecture, as a peer: Flask served by its own development server with
threaded=True (as the write-up runs it), a TorchScript ResNet-18 loaded at start and warmed up,
torchvision transforms, top-3. Nothing here is tuned: it is the baseline.

    python -m bench.peers.flask_torchscript --port 8001 --labels L (from the manifest)

--lazy loads the model on the first request instead, without warm-up: the write-up's "before"
(a cold first request), for the cold-start benchmark.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable

import torch
from flask import Flask, Response, jsonify, request
from PIL import Image
from torchvision import transforms

from bench.peers import answer, parser
from bench.torch_models import load_torchscript
from build.catalog import get

Model = Callable[[torch.Tensor], torch.Tensor]


def transform(model: str) -> Callable[[Image.Image], torch.Tensor]:
    """torchvision transforms with the model's resize, crop and mean/std (build.catalog)."""
    entry = get(model)
    spec, t = entry.preprocess, transforms
    steps = [t.Resize(spec.resize_size), t.CenterCrop(spec.crop_size), t.ToTensor()]
    to_tensor: Callable[[Image.Image], torch.Tensor] = t.Compose(
        [*steps, t.Normalize(entry.mean, entry.std)]
    )
    return to_tensor


def preloaded(model_name: str) -> Model:
    model = load_torchscript(model_name, uint8_front=False)
    with torch.inference_mode():  # warm-up: TorchScript optimises on its first runs
        for _ in range(3):
            model(torch.zeros(1, 3, 224, 224))
    return model


def lazy(model_name: str) -> Model:
    """Loads on the first call: the cost lands on the first request."""
    lock = threading.Lock()
    loaded: list[Model] = []

    def run(batch: torch.Tensor) -> torch.Tensor:
        with lock:
            if not loaded:
                loaded.append(load_torchscript(model_name, uint8_front=False))
        return loaded[0](batch)

    return run


def create_app(model: Model, labels: list[str], name: str) -> Flask:
    app, to_tensor = Flask(__name__), transform(name)

    @app.get("/readyz")
    def ready() -> Response:
        return jsonify(ready=True)  # the model was loaded and warmed before serving began

    @app.post("/v1/classify")
    def classify() -> Response | tuple[Response, int]:
        upload = request.files.get("file")
        data = upload.read() if upload else request.get_data()
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except OSError:
            return jsonify(error="not an image"), 400
        with torch.inference_mode():
            probabilities = model(to_tensor(image).unsqueeze(0))[0].softmax(0)
        scores, top = probabilities.topk(3)
        return jsonify(answer(name, labels, scores.tolist(), top.tolist()))

    return app


def main() -> None:
    args_parser = parser(__doc__, 8001)
    args_parser.add_argument("--lazy", action="store_true", help="load on the first request")
    args = args_parser.parse_args()
    labels = args.labels.read_text().splitlines()
    model = lazy(args.model) if args.lazy else preloaded(args.model)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log: it costs CPU
    create_app(model, labels, args.model).run("127.0.0.1", args.port, threaded=True)


if __name__ == "__main__":
    main()
