"""A BentoML + ONNX Runtime service with BentoML's adaptive batching, as a peer (issue 10): the
same int8 model file as the service, the CPU provider (as fastapi_ort) with intra-op spinning
off, ``@bentoml.api(batchable=True)`` so BentoML's dispatcher (its CORK algorithm) forms the
batches. It uses the service's preprocessing, so it decodes the very same pixels.

    python -m bench.peers.bentoml_ort --port 8004 --labels L --model-file F (the manifest's)

Where the work runs, in BentoML's one worker process: each request's body is decoded as
BentoML parses the request (a validator on the input type runs ``service.inference.preprocess``, on
the
event loop, one request at a time), so only the inference is batched: the dispatcher
concatenates the decoded (1, 224, 224, 3) arrays and runs the session on its one worker thread.
A batchable API answers a list per request (BentoML's batch contract); ``OneAnswer`` unwraps it
so the body is the same top-3 JSON as the other peers'. A body that is not an image is a 400
(BentoML's own validation error); POST /v1/classify takes the raw image body the load
generator sends, not multipart. GET /readyz is BentoML's own (200 once the service instance,
and so the session, exists).

``main`` execs ``bentoml serve`` (one worker process under BentoML's circus arbiter: 2 processes
in all; the machine has 2 cores and every other peer runs one server process), passing the
options as BentoML's own bento arguments (``--arg``); usage tracking is off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pydantic
from pydantic import AfterValidator
from starlette.responses import JSONResponse, Response

from bench.peers import parser, top3
from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.inference.preprocess import PreprocessSpec, preprocess

REPO = Path(__file__).resolve().parents[2]
SPEC = PreprocessSpec()
# The service's default is 4; BentoML's dispatcher picks the size under load, up to this.
MAX_BATCH = 8
# Not a batching window: BentoML refuses (503) a request it expects to wait longer than this.
# The closed loop at c=64 queues ~1.5 s here, so the deadline sits well above it.
MAX_LATENCY_MS = 10_000


class PeerArgs(pydantic.BaseModel):
    """``bentoml serve --arg``: what main() was given."""

    labels: Path
    model_file: Path
    model: str = "resnet18"


def decode(data: bytes) -> npt.NDArray[np.uint8]:
    """The body -> a batch of one; ValueError makes BentoML answer 400."""
    try:
        return preprocess(data, SPEC)[None]
    except (BadImage, ImageTooLarge, UnsupportedMediaType) as exc:
        raise ValueError(str(exc)) from exc


# bytes: BentoML hands a root input of type "string" the raw body; the validator decodes it.
Image = Annotated[bytes, AfterValidator(decode)]


class OneAnswer(bentoml.IODescriptor):  # type: ignore[misc]  # bentoml exports it lazily: Any
    """The response of one request: the one answer of its one-element list."""

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        (answer,) = obj
        return JSONResponse(answer)


@bentoml.service(
    workers=1,
    threads=1,  # one batch in flight; ORT's own intra-op threads use the 2 cores
    logging={"access": {"enabled": False}},  # the other peers log no line per request either
)
class Classifier:
    def __init__(self) -> None:
        args = bentoml.use_arguments(PeerArgs)
        self.labels = args.labels.read_text().splitlines()
        self.name = args.model
        options = ort.SessionOptions()
        # ORT's idle pool threads spin by default: here they would spin through every batching
        # wait and take the core the event loop decodes on (the service turns it off too).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(
            str(args.model_file), sess_options=options, providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name

    @bentoml.api(  # type: ignore[untyped-decorator]
        route="/v1/classify",
        batchable=True,
        max_batch_size=MAX_BATCH,
        max_latency_ms=MAX_LATENCY_MS,
        output_spec=OneAnswer,
    )
    def classify(self, images: Image, /) -> list[Any]:
        """``images``: the requests' decoded pixels, concatenated by the dispatcher."""
        logits = self.session.run(None, {self.input_name: images})[0]
        return [top3(self.name, self.labels, row) for row in logits]


def main() -> None:
    args_parser = parser(__doc__, 8004)
    args_parser.add_argument("--model-file", type=Path, required=True, help="the manifest's int8")
    args = args_parser.parse_args()
    os.environ["BENTOML_DO_NOT_TRACK"] = "true"
    command = [sys.executable, "-m", "bentoml", "serve", f"{__spec__.name}:Classifier"]
    command += ["--host=127.0.0.1", f"--port={args.port}", f"--working-dir={REPO}"]
    for key, value in (("labels", args.labels), ("model_file", args.model_file)):
        command.append(f"--arg={key}={Path(value).resolve()}")
    command.append(f"--arg=model={args.model}")
    # exec: the harness's process is BentoML's arbiter, so its SIGTERM stops the worker too.
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
