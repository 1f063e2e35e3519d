"""Large declared bodies trickled against the body budget, and a good caller meanwhile.

    python -m bench.experiments.contended_uploads [--rate 4300] [--model-dir DIR]

Starts ``python -m service`` from this checkout with its default limits (128 MiB body budget,
64 MiB batch bodies), opens two batch uploads that declare 64 MiB each and send filler at
``--rate`` bytes/s (just above the body clock's 4 KiB/s minimum), and after 4 s posts a 2.1 MB
JPEG 20 times in a row. Prints the good caller's statuses and latencies (median, max) and what
each trickle got within 60 s (docs/decisions/body-budget.md).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.launch import free_port, started

REPO = Path(__file__).resolve().parent.parent
DECLARED = 64 * 1024 * 1024  # IMGCLS_MAX_REQUEST_BYTES's default
TRICKLE_S = 60.0
GOOD_REQUESTS = 20


def good_photo() -> bytes:
    """A 2.1 MB JPEG: a 2560x1708 noisy rendering of a gradient."""
    ramp = np.linspace(0, 255, 2560, dtype=np.float32)
    pixels = np.stack([np.tile(ramp, (1708, 1))] * 3, axis=-1)
    noise = np.random.default_rng(0).integers(-16, 17, pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


async def trickle(host: str, port: int, rate: int, began: float) -> str:
    """A batch upload of DECLARED bytes at ``rate``: what it was answered, and when."""
    reader, writer = await asyncio.open_connection(host, port)
    answer = asyncio.create_task(reader.readline())  # the status line
    writer.write(
        f"POST /v1/classify/batch HTTP/1.1\r\nHost: imgcls\r\nContent-Length: {DECLARED}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode()
    )
    step, start = rate // 4, time.monotonic()
    for i in range(int(TRICKLE_S * 4)):
        if answer.done():
            break
        try:
            writer.write(b"x" * step)
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.wait([answer], timeout=max(0.0, start + (i + 1) / 4 - time.monotonic()))
    writer.close()
    if not answer.done():
        answer.cancel()
        return f"still sending after {TRICKLE_S:.0f} s"
    line = answer.result().decode("latin-1").strip() or "(closed)"
    return f"{line} at {time.monotonic() - began:.1f} s"


async def scenario(url: str, rate: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    began = time.monotonic()
    trickles = [asyncio.create_task(trickle(host, int(port), rate, began)) for _ in range(2)]
    await asyncio.sleep(4.0)  # both past the 2 s grace: the budget is full of slow bodies
    photo, answers = good_photo(), list[tuple[int, float]]()
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(GOOD_REQUESTS):
            sent = time.monotonic()
            response = await client.post(
                f"{url}/v1/classify", content=photo, headers={"Content-Type": "image/jpeg"}
            )
            answers.append((response.status_code, time.monotonic() - sent))
            await asyncio.sleep(0.2)
    statuses = {s: sum(1 for code, _ in answers if code == s) for s, _ in answers}
    print(f"good caller ({len(photo) / 1e6:.1f} MB JPEG): statuses {statuses}")
    if served := sorted(elapsed for code, elapsed in answers if code == 200):
        print(
            f"  200 latency: median {statistics.median(served) * 1000:.0f} ms, max "
            f"{served[-1] * 1000:.0f} ms; the first request {answers[0][1] * 1000:.0f} ms"
        )
    for i, outcome in enumerate(await asyncio.gather(*trickles)):
        print(f"trickle {i + 1} (64 MiB declared, {rate} B/s): {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=4300, help="each trickle's bytes per second")
    parser.add_argument("--model-dir", default=str(REPO / "model_artifacts" / "resnet18"))
    args = parser.parse_args()
    port = free_port()
    env = {"IMGCLS_HOST": "127.0.0.1", "IMGCLS_PORT": str(port), "IMGCLS_MODEL_DIR": args.model_dir}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "service"]
        with started(command, port, Path(tmp) / "service.log", env, cwd=REPO) as server:
            asyncio.run(scenario(server.url, args.rate))


if __name__ == "__main__":
    main()
