"""How many batches run side by side: as configured, or by measuring inference against decoding
(service/model/inference_streams.py), and that the runner and the service follow the choice."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from service.inference.preprocess import PreprocessSpec
from service.model import inference_streams as layout
from service.model.inference_streams import (
    StreamsChoice,
    choose_streams,
    inference_cpu_s,
    sample_upload,
)
from service.model.runner import Runner, load_runner, warmup_images


def never() -> float:
    raise AssertionError("measured although the choice did not need it")


def test_a_configured_number_wins_and_nothing_is_measured() -> None:
    assert choose_streams(3, 2, never, never) == StreamsChoice(
        3, "3 configured (IMGCLS_INFERENCE_STREAMS)"
    )


def test_one_thread_means_one_stream_without_measuring() -> None:
    assert choose_streams(None, 1, never, never).streams == 1


@pytest.mark.parametrize(
    ("inference_ms", "decode_ms", "streams"),
    [
        (26.0, 5.6, 2),  # AVX2 without VNNI: inference dominates
        (4.0, 2.0, 2),  # exactly the bound
        (3.9, 2.0, 1),  # just under it
        (2.2, 2.4, 1),  # AMX: decoding costs as much as inference
    ],
)
def test_two_streams_only_where_inference_costs_twice_the_decoding(
    inference_ms: float, decode_ms: float, streams: int
) -> None:
    choice = choose_streams(None, 2, lambda: inference_ms / 1e3, lambda: decode_ms / 1e3)
    assert choice.streams == streams
    assert choice.reason.startswith(f"auto: {streams}, ")
    assert f"inference {inference_ms:.2f} ms of CPU per image, decode {decode_ms:.2f} ms" in (
        choice.reason
    )


def test_inference_cost_is_process_cpu_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    def run() -> None:  # a batch that costs 8 ms of CPU
        clock[0] += 0.008

    monkeypatch.setattr(layout.time, "process_time", lambda: clock[0])
    assert inference_cpu_s(run, 4) == pytest.approx(0.002)


def test_the_sample_upload_is_a_typical_photo_that_the_service_decodes() -> None:
    upload = sample_upload(warmup_images())
    image = Image.open(io.BytesIO(upload))
    assert (image.format, image.size) == ("JPEG", (500, 375))
    assert layout.decode_cpu_s(upload, PreprocessSpec()) > 0


def test_the_runner_follows_the_policy_it_is_given(tiny_model_path: Path) -> None:
    seen: list[Runner] = []

    def two(runner: Runner) -> StreamsChoice:
        seen.append(runner)
        return StreamsChoice(2, "auto: 2, measured")

    loaded, _ = load_runner(tiny_model_path, "cpu", 2, warmup_images(), [1, 2], streams=two)
    assert seen == [loaded]
    assert loaded.streams == StreamsChoice(2, "auto: 2, measured")
    assert loaded._session_for(False) is not loaded._session_for(True)  # a side-by-side session

    one, _ = load_runner(
        tiny_model_path, "cpu", 2, warmup_images(), [1, 2], streams=lambda r: StreamsChoice(1, "")
    )
    assert one._session_for(False) is one._session_for(True)
