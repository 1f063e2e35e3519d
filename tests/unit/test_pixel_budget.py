"""service.limits.pixel_budget.PixelBudget: decode memory bounded by pixels in flight, first come
first
served, and an image larger than the whole budget runs alone instead of waiting forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from service.limits.pixel_budget import PixelBudget


def hold(budget: PixelBudget, pixels: int, log: list[str], name: str, release: threading.Event):
    def run() -> None:
        with budget.reserve(pixels):
            log.append(f"{name} in")
            release.wait(10)
        log.append(f"{name} out")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_images_that_fit_together_decode_together() -> None:
    budget, log, release = PixelBudget(100), [], threading.Event()
    threads = [hold(budget, 40, log, name, release) for name in "ab"]
    eventually(lambda: len(log) == 2)
    assert budget.in_use == 80
    release.set()
    for thread in threads:
        thread.join(10)
    assert budget.in_use == 0


def test_an_image_waits_until_the_pixels_in_flight_leave_it_room() -> None:
    budget, log = PixelBudget(100), []
    first_done, second_done = threading.Event(), threading.Event()
    hold(budget, 70, log, "a", first_done)
    eventually(lambda: log == ["a in"])
    hold(budget, 50, log, "b", second_done)
    time.sleep(0.05)
    assert log == ["a in"]  # 70 + 50 > 100: b waits
    first_done.set()
    eventually(lambda: log[-1] == "b in")
    assert log == ["a in", "a out", "b in"]
    second_done.set()


def test_a_waiting_large_image_is_not_overtaken_by_small_ones() -> None:
    budget, log = PixelBudget(100), []
    releases = {name: threading.Event() for name in "abc"}
    hold(budget, 60, log, "a", releases["a"])
    eventually(lambda: log == ["a in"])
    hold(budget, 100, log, "b", releases["b"])  # needs all of it
    time.sleep(0.05)
    hold(budget, 10, log, "c", releases["c"])  # would fit now, but b is first in line
    time.sleep(0.05)
    assert log == ["a in"]
    releases["a"].set()
    eventually(lambda: "b in" in log)
    assert "c in" not in log
    releases["b"].set()
    eventually(lambda: "c in" in log)
    releases["c"].set()


def test_an_image_larger_than_the_budget_runs_alone() -> None:
    budget, log, release = PixelBudget(100), [], threading.Event()
    thread = hold(budget, 5_000, log, "huge", release)
    eventually(lambda: log == ["huge in"])
    assert budget.in_use == 100
    release.set()
    thread.join(10)
    assert budget.in_use == 0


def test_the_budget_is_released_when_decoding_fails() -> None:
    budget = PixelBudget(100)
    with pytest.raises(ValueError, match="corrupt"), budget.reserve(100):
        raise ValueError("corrupt")
    assert budget.in_use == 0
