"""gRPC costs nothing before a call is authenticated, and a bounded amount after, against a
real ``python -m service`` with auth on (issue 22, findings 4 and 5).

The attacks run from another process (tests/e2e/grpc_flood.py) while this one samples the
server's memory and asks /livez one request after another (tests/e2e/watch.py). Before the
fix, 8 calls of 60 MB without a token took +903 MB (2.2 GB peak with 16), and 20 made-up
method names added 480 metric series."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import grpc
import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.conftest import ServiceProcess, free_port, run_service
from tests.e2e.watch import watching

pytestmark = pytest.mark.slow

TOKEN = "s3cret"
MESSAGE_BYTES = 60 * 1024 * 1024


def flood(port: int, calls: int, token: str | None = None) -> Counter[str]:
    args = [sys.executable, "-m", "tests.e2e.grpc_flood", str(port), str(calls)]
    args += [str(MESSAGE_BYTES), *([token] if token else [])]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return Counter(done.stdout.split())


def grpc_series(server: ServiceProcess) -> list[str]:
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    return [line.rsplit(" ", 1)[0] for line in metrics.splitlines() if "imgcls_grpc_" in line]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> object:
    port = free_port()
    env = {"IMGCLS_GRPC_PORT": str(port), "IMGCLS_API_TOKENS": TOKEN}
    with run_service(tmp_path_factory.mktemp("grpc"), trained_model_dir, **env) as server:
        yield server, port


def test_large_calls_without_a_token_are_refused_before_their_messages_are_read(
    served: tuple[ServiceProcess, int],
) -> None:
    server, port = served
    with watching(server) as watch:
        codes = flood(port, calls=16)
    print(f"16 x 60 MB without a token: RSS +{watch.growth_mb:.0f} MB, slowest /livez "
          f"{watch.slowest_livez_s * 1e3:.0f} ms")  # fmt: skip
    assert codes == {"UNAUTHENTICATED": 16}
    assert watch.growth_mb < 300
    assert watch.livez_statuses == {200}
    assert watch.slowest_livez_s < 0.5


def test_large_authenticated_calls_are_received_a_turn_at_a_time(
    served: tuple[ServiceProcess, int],
) -> None:
    """8 such calls with the token: received and decoded one at a time, charged to the body
    budget (128 MiB: two held at once, the rest RESOURCE_EXHAUSTED), refused for their content
    (60 MB of zeros is no image). Before: +1159 MB, and 1.1 GB kept."""
    server, port = served
    with watching(server) as watch:
        codes = flood(port, calls=8, token=TOKEN)
    print(f"8 x 60 MB with the token: {dict(codes)}, RSS +{watch.growth_mb:.0f} MB")
    assert set(codes) <= {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
    assert watch.growth_mb < 400


def test_made_up_method_names_add_no_metric_series(served: tuple[ServiceProcess, int]) -> None:
    server, port = served
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:

        def call(path: str) -> grpc.StatusCode:
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary(path)(b"", timeout=10)
            code: grpc.StatusCode = refused.value.code()  # type: ignore[attr-defined]
            return code

        call(f"/{uuid.uuid4().hex}/x")  # the "unmatched" series exist from here on
        before = grpc_series(server)
        codes = {call(f"/{uuid.uuid4().hex}.Service/{uuid.uuid4().hex}") for _ in range(200)}
        after = grpc_series(server)
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    assert after == before
