"""The runner on a real ONNX Runtime session (the tiny nearest-colour model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.model import runner
from service.model.runner import (
    CPU,
    OPENVINO,
    Runner,
    batch_sizes_for,
    compare_providers,
    create_session,
    load_runner,
    session_options,
    top1_agreement,
    warmup_images,
)
from tests.unit.tiny import colour_batch, tiny_model

HAVE_OPENVINO = OPENVINO in runner.available_providers()
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="onnxruntime-openvino not installed")


def test_session_options_pin_threads_and_disable_spinning() -> None:
    options = session_options(3)
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_run_returns_one_row_of_logits_per_image_in_order(tiny_model_path: Path) -> None:
    cpu = Runner(create_session(tiny_model_path, CPU, 1), CPU)
    classes = [7, 999, 0, 512, 7]
    logits = cpu.run(colour_batch(classes))
    assert logits.shape == (5, 1000)
    assert logits.dtype == np.float32
    assert list(np.argmax(logits, axis=1)) == classes


def test_load_runner_cpu_warms_every_batch_size(tiny_model_path: Path) -> None:
    loaded, choice = load_runner(tiny_model_path, "cpu", 1, warmup_images(), range(1, 5))
    assert (choice.provider, choice.code) == (CPU, "configured")
    assert loaded.provider == CPU
    assert sorted(loaded.warmup_latency_s) == [1, 2, 3, 4]
    assert all(seconds > 0 for seconds in loaded.warmup_latency_s.values())


def test_with_two_streams_a_lone_batch_gets_every_thread_and_overlapping_ones_a_share(
    tiny_model_path: Path,
) -> None:
    loaded, _ = load_runner(tiny_model_path, "cpu", 2, warmup_images(), [1, 2], streams=2)
    threads = {
        alone: loaded._session_for(alone).get_session_options().intra_op_num_threads
        for alone in (True, False)
    }
    assert threads == {True: 2, False: 1}
    classes = [3, 141, 592]
    for alone in (True, False):  # the same model either way
        assert list(np.argmax(loaded.run(colour_batch(classes), alone), axis=1)) == classes


def test_with_one_stream_there_is_one_session(tiny_model_path: Path) -> None:
    loaded, _ = load_runner(tiny_model_path, "cpu", 2, warmup_images(), [1, 2])
    assert loaded._session_for(True) is loaded._session_for(False)


def test_auto_without_openvino_uses_cpu_and_says_why(
    tiny_model_path: Path, no_openvino: None
) -> None:
    _, choice = load_runner(tiny_model_path, "auto", 1, warmup_images(), [1, 2])
    assert (choice.provider, choice.code) == (CPU, "unavailable")
    assert "not installed" in choice.reason


def test_openvino_asked_for_but_missing_is_an_error(
    tiny_model_path: Path, no_openvino: None
) -> None:
    with pytest.raises(RuntimeError, match="IMGCLS_PROVIDER=cpu"):
        load_runner(tiny_model_path, "openvino", 1, warmup_images(), [1])


@needs_openvino
def test_auto_measures_both_providers_and_keeps_the_faster(tiny_model_path: Path) -> None:
    loaded, choice = load_runner(tiny_model_path, "auto", 2, colour_batch([1, 2, 3]), [1, 4])
    assert choice.code in ("faster", "cpu_faster")
    assert loaded.provider == choice.provider
    assert "top-1 agreed on 3/3" in choice.reason
    assert "OpenVINO" in choice.reason
    assert "CPU" in choice.reason


@needs_openvino
def test_openvino_runner_gives_the_cpu_answers(tiny_model_path: Path) -> None:
    loaded, choice = load_runner(tiny_model_path, "openvino", 2, warmup_images(), [1, 3])
    assert choice.provider == OPENVINO
    classes = [3, 141, 592]
    assert list(np.argmax(loaded.run(colour_batch(classes)), axis=1)) == classes


@needs_openvino
def test_a_provider_that_disagrees_with_cpu_is_not_chosen(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    shuffled = tmp_path / "shuffled.onnx"
    tiny_model(shuffled, permute=True)  # stands for a provider that miscompiles the graph
    cpu = Runner(create_session(tiny_model_path, CPU, 1), CPU)
    wrong = Runner(create_session(shuffled, OPENVINO, 1), OPENVINO)
    chosen, choice = compare_providers(cpu, wrong, colour_batch([10, 20, 30, 40]), [1, 2])
    assert chosen is cpu
    assert choice.code == "disagrees"
    assert "0/4" in choice.reason


@pytest.mark.parametrize(
    ("largest", "sizes"),
    [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12])],
)
def test_batch_sizes_are_powers_of_two_and_the_maximum(largest: int, sizes: list[int]) -> None:
    assert batch_sizes_for(largest) == sizes


def test_top1_agreement_counts_matching_rows() -> None:
    reference = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    candidate = np.array([[0, 2, 1], [0, 1, 0], [0, 0, 5]], dtype=np.float32)
    assert top1_agreement(reference, candidate) == (2, 3)


def test_warmup_images_are_deterministic_varied_pictures() -> None:
    images = warmup_images(224, 224, count=4)
    assert images.shape == (4, 224, 224, 3)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, warmup_images(224, 224, count=4))
    assert images.std() > 30  # structure, not a flat grey
    assert not np.array_equal(images[0], images[1])


def test_a_session_that_fell_back_to_the_cpu_provider_is_an_error(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORT logs an execution provider it cannot create (bad options, a broken install) and
    runs the session on the CPU provider: every report would name OpenVINO wrongly."""
    real = runner.ort.InferenceSession

    def without_openvino(path: str, sess_options: object, providers: list[object]) -> object:
        return real(path, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(runner.ort, "InferenceSession", without_openvino)
    with pytest.raises(RuntimeError, match="OpenVINOExecutionProvider could not be created"):
        create_session(tiny_model_path, OPENVINO, 1)
    assert create_session(tiny_model_path, CPU, 1).get_providers() == [CPU]
