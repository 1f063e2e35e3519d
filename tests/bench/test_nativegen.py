"""The C load generator (bench/loadgen/loadgen.c, driven by bench/loadgen/native.py) against a
small real HTTP/1.1 server on a loopback port, one behaviour per path: what bench.overload's figures
rest on is that it sends what it is asked, reuses keep-alive connections, times and names every
outcome, and survives whatever a server does to a connection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.loadgen.native import NativeGenerator, build, parse
from bench.loadgen.outcomes import Mode, Step
from tests.bench.http_server import Server, serving
from tests.e2e.conftest import require_binary

pytestmark = pytest.mark.anyio
BODIES = [b"a" * 100, b"b" * 150_000, b"c" * 2_000]  # one far larger than a socket's first write


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_binary("cc")  # without one bench.overload falls back to the Python generator
    built = build(tmp_path_factory.mktemp("bin"))
    assert built is not None
    return built


def generator(exe: Path, server: Server, path: str) -> NativeGenerator:
    return NativeGenerator(exe, f"http://127.0.0.1:{server.port}{path}", BODIES)


async def one_step(
    exe: Path,
    path: str,
    mode: Mode,
    amount: float,
    duration_s: float,
    max_outstanding: int = 16,
    bodies: list[bytes] = BODIES,
) -> tuple[Step, Server]:
    """One step of the generator against a fresh server; the step's outcomes and the server."""
    async with serving() as server:
        load = NativeGenerator(exe, f"http://127.0.0.1:{server.port}{path}", bodies)
        step = await load.step(mode, amount, duration_s, max_outstanding)
        await load.aclose()
    return step, server


async def test_a_closed_loop_reuses_one_connection_per_user(exe: Path) -> None:
    async with serving() as server:
        load = generator(exe, server, "/ok")
        outcomes, elapsed, dropped = await load.step("closed", 3, 0.5, 16)
        await load.aclose()
    assert {o.status for o in outcomes} == {200}
    assert len(outcomes) > 30
    assert server.connections == 3
    sizes = Counter(server.bodies)  # round robin over the bodies, each upload whole
    assert set(sizes) == {len(body) for body in BODIES}
    assert max(sizes.values()) - min(sizes.values()) <= 3
    assert len(server.bodies) == len(outcomes)
    assert {o.phases_ms["total"] for o in outcomes} == {1.5}  # Server-Timing's total, in ms
    assert all(o.latency_ms > 0 for o in outcomes)
    assert 0.5 <= elapsed < 2
    assert dropped == 0
    assert load.cpu_s > 0


async def test_an_open_loop_sends_its_seeded_schedule_and_times_the_answer_before_the_upload(
    exe: Path,
) -> None:
    async with serving() as server:
        load = generator(exe, server, "/refuse")
        first = await load.step("open", 400, 0.5, 64, seed=1)
        again = await load.step("open", 400, 0.5, 64, seed=1)
        other = await load.step("open", 400, 0.5, 64, seed=2)
        await load.aclose()
    counts = [len(step[0]) + step[2] for step in (first, again, other)]
    assert counts[0] == counts[1]  # the same seed, the same arrivals
    assert counts[0] != counts[2]
    assert 100 < counts[0] < 400  # ~200 expected
    assert {o.status for o in first[0]} == {503}
    assert all(o.phases_ms == {} for o in first[0])  # no Server-Timing here
    # every upload finished, so every connection could carry its next request
    assert len(server.bodies) == sum(counts)
    assert server.connections < 64


async def test_an_answer_before_the_upload_ends_waits_for_the_upload(exe: Path) -> None:
    """A body far larger than the socket buffers: the 503 comes back mid-upload; the request is
    done once the upload is, and the connection carries the next one."""
    big = b"d" * 16_000_000
    (outcomes, _, _), server = await one_step(exe, "/refuse", "closed", 1, 0.3, bodies=[big])
    assert {o.status for o in outcomes} == {503}
    # the last upload may still be in the socket when the server stops reading
    assert server.bodies in ([len(big)] * len(outcomes), [len(big)] * (len(outcomes) - 1))
    assert len(outcomes) > 1
    assert server.connections == 1


async def test_arrivals_beyond_the_outstanding_limit_are_dropped_and_counted(exe: Path) -> None:
    (outcomes, _, dropped), _ = await one_step(exe, "/slow", "open", 200, 0.3, max_outstanding=2)
    assert len(outcomes) == 2
    assert {o.status for o in outcomes} == {200}
    assert dropped > 20
    assert min(o.latency_ms for o in outcomes) >= 500


async def test_connection_close_is_honoured(exe: Path) -> None:
    (outcomes, _, _), server = await one_step(exe, "/close", "closed", 2, 0.3)
    assert {o.status for o in outcomes} == {200}
    assert server.connections == len(outcomes)


async def test_a_connection_closed_unannounced_is_retried_once_on_a_new_one(exe: Path) -> None:
    (outcomes, _, _), server = await one_step(exe, "/vanish", "closed", 1, 0.3)
    assert Counter(o.status for o in outcomes) == {200: len(outcomes)}
    assert len(outcomes) > 5
    assert server.connections >= len(outcomes)
    # one user: its retried request is still its one request (the closing one may linger)
    assert server.most_open <= 2


async def test_a_request_never_answered_is_recorded_after_the_drain_not_waited_for(
    exe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOADGEN_DRAIN_S", "0.5")  # 30 s by default
    (outcomes, elapsed, _), server = await one_step(exe, "/never", "closed", 2, 0.2)
    assert [o.status for o in outcomes] == ["NoAnswer", "NoAnswer"]
    assert all(o.latency_ms >= 700 for o in outcomes)  # the step's 0.2 s, then the drain's 0.5
    assert elapsed < 5
    assert server.connections == 2


async def test_a_response_that_is_not_http_is_named(exe: Path) -> None:
    (outcomes, _, _), _ = await one_step(exe, "/garbage", "open", 50, 0.2)
    assert outcomes
    assert {o.status for o in outcomes} == {"BadResponse"}


async def test_nothing_listening_is_a_connect_error(exe: Path) -> None:
    async with serving() as server:
        port = server.port
    load = NativeGenerator(exe, f"http://127.0.0.1:{port}/ok", BODIES)
    outcomes, _, _ = await load.step("open", 50, 0.2, 16)
    await load.aclose()
    assert outcomes
    assert {o.status for o in outcomes} == {"ConnectError"}


def test_the_output_is_read_in_milliseconds_with_errors_named() -> None:
    outcomes, elapsed, dropped = parse("503 1500 10 250\n-2 9000 0 -1\n# 500000 3\n")
    assert (elapsed, dropped) == (0.5, 3)
    assert [(o.status, o.latency_ms, o.sent_late_ms, o.phases_ms) for o in outcomes] == [
        (503, 1.5, 0.01, {"total": 0.25}),
        ("ConnectionClosed", 9.0, 0.0, {}),
    ]


def test_output_cut_short_is_an_error() -> None:
    with pytest.raises(ValueError, match="without its summary"):
        parse("200 1500 10 -1\n")
