"""Peer services on the same harness: the write-up's architecture (flask_torchscript), a plain
FastAPI + ONNX Runtime service (fastapi_ort), and issue 10's strongest peers: FastAPI + OpenVINO
native (fastapi_openvino) and BentoML + ONNX Runtime with adaptive batching (bentoml_ort).
``python -m bench.peers`` compares them with the service. All serve GET /readyz and POST
/v1/classify (a raw image body, as the load generator sends; all but bentoml_ort also take a
multipart "file") and answer the top 3 as JSON, with the options and answer shape below."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.inference.preprocess import DRAFT_MARGIN, PreprocessSpec


def parser(doc: str | None, port: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--labels", type=Path, required=True, help="the manifest's labels file")
    p.add_argument(
        "--draft-margin",
        type=float,
        default=DRAFT_MARGIN,
        help="the JPEG draft of the service's preprocessing (0: every pixel decoded, as a "
        "FastAPI app that opens the image with Pillow does; default: the service's)",
    )
    return p


def preprocess_spec(args: argparse.Namespace) -> PreprocessSpec:
    return PreprocessSpec(draft_margin=args.draft_margin or None)


def top3(model: str, labels: list[str], logits: npt.NDArray[np.floating[Any]]) -> object:
    """The answer for one image's logits: softmax, the 3 best, as ``answer`` shapes them."""
    wide = logits.astype(np.float64)
    probabilities = np.exp(wide - wide.max())
    probabilities /= probabilities.sum()
    top = np.argsort(-probabilities)[:3].tolist()
    return answer(model, labels, probabilities[top].tolist(), top)


def answer(model: str, labels: list[str], scores: Sequence[float], top: Sequence[int]) -> object:
    pairs = zip(scores, top, strict=True)
    predictions = [{"label": labels[i], "class_index": i, "score": s} for s, i in pairs]
    return {"model": model, "predictions": predictions}
