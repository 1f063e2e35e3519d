"""A gRPC call whose status cannot be sent because its caller is gone (the deadline passed as
the error was raised) ends as cancelled, which grpc does not log, instead of grpc's
ExecuteBatchError traceback; while the caller is there, a failure to send is not hidden."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from service.grpc.calls import _Call


class Context:
    def __init__(self, remaining: float | None, done: bool = False) -> None:
        self.remaining, self.finished = remaining, done

    def time_remaining(self) -> float | None:
        return self.remaining

    def done(self) -> bool:
        return self.finished

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise RuntimeError('Failed "execute_batch"')  # what grpc raises: ExecuteBatchError


def _call(context: Any) -> _Call:
    return _Call(metrics=Any, method="ModelInfer", context=context, tracing=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("context", [Context(0.0), Context(-0.2), Context(None, done=True)])
def test_a_status_for_a_caller_gone_ends_the_call_as_cancelled(context: Context) -> None:
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_call(context)._abort(grpc.StatusCode.DEADLINE_EXCEEDED, "timed out"))


@pytest.mark.parametrize("context", [Context(5.0), Context(None)])
def test_a_status_that_fails_while_the_caller_waits_is_not_hidden(context: Context) -> None:
    with pytest.raises(RuntimeError):
        asyncio.run(_call(context)._abort(grpc.StatusCode.INTERNAL, "x"))
