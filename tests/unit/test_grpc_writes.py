"""A stream's write that gRPC core could not do (``doors/grpc.py``'s ``_write``): the client's
connection went before gRPC noticed the client had left. grpcio logs such a failure at ERROR, with
a traceback, if the handler lets it out (bench/abuse.py's ``Ports.Stream`` flood met it once); the
door ends the call as the client's cancel would."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from grpc._cython import cygrpc
from sockbroker.doors.grpc import _write
from sockbroker_wire.v1 import broker_pb2 as pb


class _Context:
    """The one method of a servicer context that ``_write`` uses, failing as core fails it."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.written: list[Any] = []

    async def write(self, message: Any) -> None:
        if self.error is not None:
            raise self.error
        self.written.append(message)


async def test_a_write_core_could_not_do_ends_the_call_as_a_cancel() -> None:
    failed = _Context(cygrpc.ExecuteBatchError('Failed "execute_batch"'))
    with pytest.raises(asyncio.CancelledError):
        await _write(cast(Any, failed), pb.StreamFrame(data=b"x"))


async def test_a_write_core_did_is_written() -> None:
    done = _Context(None)
    await _write(cast(Any, done), pb.StreamFrame(data=b"x"))
    assert done.written == [pb.StreamFrame(data=b"x")]
