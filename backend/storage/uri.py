"""Store URIs: ``lmdb://`` (default, with a generous map size), ``mem://``, ``s3://``.

* ``lmdb:///abs/path`` or ``lmdb://relative/path``; options after ``?`` pass through to
  ArcticDB. Without ``map_size`` we add :data:`DEFAULT_MAP_SIZE` (LMDB reserves address space,
  not disk, so a large map costs nothing until used; a full map raises ``LmdbMapFullError``
  and the store must be reopened with a larger ``?map_size=``).
* ``mem://`` is a fresh private in-process store at every open; ``mem://NAME`` is shared by
  every open of that name in the process (handy when a test opens a writer and a reader).
* ``s3://...`` passes through unchanged (no writer lock there: see docs/storage.md).
* ``memory://`` is the pure-Python twin (:class:`~backend.storage.memory.MemoryStore`).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from backend.errors import InvalidFieldError

DEFAULT_MAP_SIZE = "64GB"

_anon = itertools.count()


@dataclass(frozen=True)
class ParsedUri:
    kind: str  # lmdb | mem | s3 | memory
    arctic_uri: str  # what arcticdb.Arctic is given
    root: str  # the lease key: lmdb path, mem name, or the s3 endpoint:bucket, port, prefix
    key: str  # registry key: one Arctic instance per key per process


def parse_uri(uri: str) -> ParsedUri:
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidFieldError("uri", uri, "must look like lmdb:///path, mem:// or s3://...")
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "lmdb":
        path, _, query = rest.partition("?")
        if not path:
            raise InvalidFieldError("uri", uri, "lmdb:// needs a path")
        root = os.path.abspath(path)
        params = [p for p in query.split("&") if p]
        if not any(p.startswith("map_size=") for p in params):
            params.append(f"map_size={DEFAULT_MAP_SIZE}")
        arctic_uri = f"lmdb://{root}?{'&'.join(params)}"
        return ParsedUri("lmdb", arctic_uri, root, f"lmdb://{root}")
    if scheme == "mem":
        name = rest.strip("/")
        if not name:
            name = f"_anonymous_{os.getpid()}_{next(_anon)}"
        return ParsedUri("mem", "mem://", f"mem://{name}", f"mem://{name}")
    if scheme == "s3" or scheme == "s3s":
        return ParsedUri("s3", uri, _s3_root(scheme, rest), uri)
    if scheme == "memory":
        return ParsedUri("memory", uri, uri, uri)
    raise InvalidFieldError("uri", uri, "scheme must be lmdb://, mem://, s3:// or memory://")


def _s3_root(scheme: str, rest: str) -> str:
    """What names one ArcticDB root on S3: endpoint, bucket, ``port`` and ``path_prefix`` (two
    prefixes of one bucket are two roots); credentials, region and the other options are how
    to reach it, not which one it is."""
    where, _, query = rest.partition("?")
    options = dict(p.partition("=")[::2] for p in query.split("&") if p)
    named = "&".join(f"{k}={options[k]}" for k in ("port", "path_prefix") if options.get(k))
    return f"{scheme}://{where}" + (f"?{named}" if named else "")
