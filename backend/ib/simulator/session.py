"""One client connection of the simulated gateway: sending, counting, dropping, subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from backend.ib.simulator.protocol import frame

log = logging.getLogger("backend.ib.simulator")


@dataclass
class Subscriptions:
    """What this client asked to be kept up to date on (mutable per-connection state)."""

    positions: bool = False
    account: str | None = None  # reqAccountUpdates(True, account)
    multi: dict[int, tuple[str, ...]] = field(default_factory=dict)  # reqId -> accounts
    market_data: dict[int, int] = field(default_factory=dict)  # reqId -> conId
    market_data_type: int = 0  # 0: the scenario's default
    auto_bind: bool = False


class Session:
    """Server side of one TCP connection."""

    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.client_id: int | None = None
        self.server_version = 178  # what the handshake answered
        self.ready = False  # startApi answered
        self.closed = False
        self.sent = 0  # frames sent, handshake reply included
        self.drop_after: int | None = None  # absolute `sent` count at which to drop
        self.drop_mode = "fin"
        self.subs = Subscriptions()
        # split_writes > 0: bytes go out in pieces of this size, one per loop iteration, so
        # the client sees frames cut across TCP reads (the pieces keep their order)
        self.split_writes = 0
        self._pending = bytearray()
        self._flusher: asyncio.Task[None] | None = None
        self._drop_when_flushed: str | None = None

    def send(self, fields: Sequence[str]) -> None:
        """Write one message now, unless the connection is (being) dropped."""
        if self.closed or self._drop_when_flushed:
            return
        data = frame(fields)
        self.sent += 1
        log.debug("sim -> %s: %s", self.client_id, ",".join(fields))
        drop_now = self.drop_after is not None and self.sent >= self.drop_after
        if self.split_writes > 0 or self._pending:
            self._pending += data
            if drop_now:
                self._drop_when_flushed = self.drop_mode
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.ensure_future(self._flush())
            return
        self.writer.write(data)
        if drop_now:
            self.drop(self.drop_mode)

    async def _flush(self) -> None:
        while self._pending and not self.closed:
            size = self.split_writes if self.split_writes > 0 else len(self._pending)
            piece = bytes(self._pending[:size])
            del self._pending[:size]
            self.writer.write(piece)
            await asyncio.sleep(0.001)
        if self._drop_when_flushed:
            self.drop(self._drop_when_flushed)

    def send_all(self, messages: Sequence[Sequence[str]]) -> None:
        for m in messages:
            self.send(m)

    def drop(self, mode: str = "fin") -> None:
        """Close the connection: ``fin`` flushes and closes, ``rst`` resets it (SO_LINGER 0)."""
        if self.closed:
            return
        self.closed = True
        transport = self.writer.transport
        if mode == "rst":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
            transport.abort()
        else:
            self.writer.close()

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.drop("fin")
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await self.writer.wait_closed()
