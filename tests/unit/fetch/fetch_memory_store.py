"""An in-memory Store for unit tests: serves bytes, records ranges, can drop a connection or corrupt data once."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

from fms_worker.fetch.download import Transient
from fms_worker.fetch.manifest import Checksum, Manifest, RemoteFile, select


class MemoryStore:
    def __init__(self, files: dict[str, bytes], checksums: dict[str, Checksum] | None = None):
        self.files = files
        self.checksums = checksums or {p: Checksum("sha256", hashlib.sha256(b).hexdigest()) for p, b in files.items()}
        self.ranges: list[tuple[str, int, int]] = []
        self.drop_after: dict[str, int] = {}  # path -> bytes served before the connection drops (once)
        self.corrupt: set[str] = set()  # paths served with one flipped byte
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "mem://test"

    def list_files(self, include_pickles: bool) -> Manifest:
        return select([RemoteFile(p, len(b), self.checksums[p]) for p, b in self.files.items()], "rev1", include_pickles)

    def read_range(self, path: str, start: int, end: int, size: int) -> Iterator[bytes]:
        with self._lock:
            self.ranges.append((path, start, end))
            drop = self.drop_after.pop(path, None)
        data = self.files[path][start:end]
        if path in self.corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if drop is not None:
            yield data[:drop]
            raise Transient("connection reset (test)")
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]

    def close(self) -> None:
        pass
