"""Raw TCP against the simulator: framing across split writes, bad handshakes."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import pytest

from backend.ib.simulator import GatewaySimulator
from backend.ib.simulator.protocol import FrameBuffer, frame, split_payload

pytestmark = pytest.mark.asyncio


class Frames:
    """Client-side frame reader for raw-socket tests."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = FrameBuffer()
        self.pending: deque[bytes] = deque()

    async def next(self) -> list[str]:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(4096), 5)
            assert data, "server closed"
            self.pending.extend(self.buf.feed(data))
        return split_payload(self.pending.popleft())


async def test_handshake_and_requests_split_byte_by_byte(sim: GatewaySimulator) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        # the version range is framed without a trailing NUL, as ib_async sends it
        wire = b"API\0" + len(b"v157..178 +PACEAPI").to_bytes(4, "big") + b"v157..178 +PACEAPI"
        wire += frame(["71", "2", "9", ""]) + frame(["49", "1"])
        for i in range(len(wire)):
            writer.write(wire[i : i + 1])
            await writer.drain()
        frames = Frames(reader)
        version, conn_time = await frames.next()
        assert version == "178"
        assert conn_time.endswith(" UTC")
        assert await frames.next() == ["15", "1", "DU1234567"]
        assert await frames.next() == ["9", "1", "100"]
        msg = await frames.next()
        assert msg[:2] == ["49", "1"]
        assert int(msg[2]) > 1_700_000_000
        assert sim.handshakes == ["v157..178 +PACEAPI"]
        assert sim.received == [["71", "2", "9", ""], ["49", "1"]]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("hello", [b"GET / HTTP/1.1\r\n", b"API\0\0\0\0\x07v100..1"])
async def test_bad_handshakes_are_closed(sim: GatewaySimulator, hello: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(hello)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a reply
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_malformed_request_gets_error_320_and_server_keeps_serving(
    sim: GatewaySimulator,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(b"API\0" + frame(["v157..178"]) + frame(["71", "2", "3", ""]))
        frames = Frames(reader)
        assert (await frames.next())[0] == "178"
        assert (await frames.next())[0] == "15"
        assert (await frames.next())[0] == "9"
        writer.write(frame(["9", "8", "42", "abc"]))  # reqContractDetails, truncated
        err = await frames.next()
        assert err[:4] == ["4", "2", "42", "320"]
        writer.write(frame(["49", "1"]))
        assert (await frames.next())[0] == "49"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
