"""One model's directory in the cache volume: the complete marker, the fetch record, the lock.

A directory counts as a model only when its marker exists. The marker is the
last thing written (after every file is verified, renamed from `.partial` and
fsynced), so a fetch that crashes at any point leaves a directory that the
next fetch resumes and the worker never mistakes for a whole model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

MARKER = ".fms-complete"
RECORD = ".fms-fetch.json"


@dataclass(frozen=True)
class FetchRecord:
    source: str
    revision: str | None
    files: int
    bytes: int
    seconds: float  # wall time of the fetch that filled the cache
    fetched_at: float  # unix time


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class ModelCache:
    def __init__(self, root: Path, name: str):
        self.root = Path(root)
        self.dir = self.root / name
        self.marker = self.dir / MARKER
        self.record_path = self.dir / RECORD
        self.lock_path = self.root / ".locks" / f"{name}.lock"

    def is_complete(self) -> bool:
        return self.marker.exists()

    def lock(self, timeout: float) -> FileLock:
        """A lock on the volume, so replicas sharing it fetch once and the others wait, then reuse."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.lock_path), timeout=timeout)

    def read_record(self) -> FetchRecord | None:
        try:
            return FetchRecord(**json.loads(self.record_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def mark_complete(self, record: FetchRecord) -> None:
        fsync_dir(self.dir)
        write_atomic(self.record_path, json.dumps(asdict(record), indent=1) + "\n")
        write_atomic(self.marker, "ok\n")
