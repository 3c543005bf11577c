"""Every exception this package raises on purpose.

The tree::

    LedgerError                      base of everything below; catch this to catch ours
    ├── InvalidInputError            bad input, caller's fault (also a ValueError)
    │   ├── InvalidFieldError        one field has a bad value: names the field and the value
    │   ├── InvalidMessageError      a queue message that cannot be read (unknown type, ...)
    │   └── InvalidExecIdError       an IB execId that does not parse
    ├── ConflictingFillError         same exec_id seen twice with different content
    ├── StorageError                 ArcticDB / journal trouble
    │   ├── SchemaMismatchError      a frame does not match the library's fixed schema
    │   ├── UnsortedIndexError       would let unsorted rows reach a symbol (refused)
    │   ├── WriterLeaseError         another process holds the writer lease (names the holder)
    │   ├── JournalError             the local write-ahead journal failed
    │   └── PersistError             a batch could not be made durable after retries
    ├── BrokerError                  talking to IB (Gateway or the simulator) failed
    │   ├── BrokerTimeoutError       a request got no complete answer before its deadline
    │   ├── BrokerDisconnectedError  the connection dropped mid-request
    │   ├── ClientIdInUseError       IB error 326: the clientId is taken
    │   └── BrokerRequestError       IB answered a request with an error code
    └── ReconciliationError          a reconciliation run could not be completed

Messages name the parameter or field and the offending value, e.g.
``InvalidFieldError("qty", -5, "must be > 0")`` renders as ``qty=-5: must be > 0``.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(LedgerError, ValueError):
    """Input that the caller must fix; nothing was changed."""


class InvalidFieldError(InvalidInputError):
    """One field carries a value we cannot accept."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


class InvalidMessageError(InvalidInputError):
    """A queue message that cannot be read as a fill or a status change."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"message field {field}={value!r}: {reason}")


class InvalidExecIdError(InvalidFieldError):
    """An execId that is not of IB's dotted form."""

    def __init__(self, value: Any, reason: str) -> None:
        super().__init__("exec_id", value, reason)


class ConflictingFillError(LedgerError):
    """The same exec_id arrived twice with different content (not a correction)."""

    def __init__(self, exec_id: str, first: Any, second: Any) -> None:
        self.exec_id = exec_id
        self.first = first
        self.second = second
        super().__init__(
            f"exec_id={exec_id!r} seen twice with different content: "
            f"first={first!r} second={second!r}"
        )


class StorageError(LedgerError):
    """ArcticDB or the local journal failed."""


class SchemaMismatchError(StorageError):
    """A frame does not match the fixed schema of its library."""


class UnsortedIndexError(StorageError):
    """Rows that would leave a symbol unsorted were refused."""


class WriterLeaseError(StorageError):
    """Another live process holds the writer lease for this Arctic root."""

    def __init__(self, root: str, holder: str) -> None:
        self.root = root
        self.holder = holder
        super().__init__(f"arctic root {root!r} is held by another writer: {holder}")


class JournalError(StorageError):
    """The local write-ahead journal could not be written or read."""


class PersistError(StorageError):
    """A batch could not be persisted; it stays pending and nothing was dropped."""


class BrokerError(LedgerError):
    """Talking to IB failed."""


class BrokerTimeoutError(BrokerError, TimeoutError):
    """A request got no complete answer before its deadline (never read as 'flat')."""


class BrokerDisconnectedError(BrokerError, ConnectionError):
    """The connection to the gateway dropped."""


class ClientIdInUseError(BrokerError):
    """IB error 326: the clientId is already in use by another connection."""

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        super().__init__(f"client_id={client_id!r}: already in use at the gateway (IB error 326)")


class BrokerRequestError(BrokerError):
    """IB answered a request with an error code."""

    def __init__(self, request: str, code: int, message: str) -> None:
        self.request = request
        self.code = code
        self.message = message
        super().__init__(f"{request}: IB error code={code!r}: {message}")


class ReconciliationError(LedgerError):
    """A reconciliation run could not be completed."""
