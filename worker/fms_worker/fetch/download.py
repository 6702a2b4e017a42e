"""Resumable, parallel, verified download of a manifest into a model directory.

Each file is cut into chunks of `chunk_size` bytes. A chunk downloads into its
own part file (`<file>.partial` for a one-chunk file, `<file>.partial.<i>`
otherwise) and a retry or a later fetch asks the store for the bytes from the
part's current size on, so nothing already on disk is fetched again. When all
chunks of a file are in, they are joined while hashing, checked against the
store's checksum, fsynced and renamed to the final name. A file with its final
name is therefore whole and verified.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fms_worker.fetch.checksum import Verifier
from fms_worker.fetch.errors import ExitCode, FetchError, gib
from fms_worker.fetch.manifest import Manifest, RemoteFile

READ_BLOCK = 1 << 20


class Transient(Exception):
    """A network or server hiccup: retry from where the part file ends."""


class Store(Protocol):
    def describe(self) -> str: ...
    def list_files(self, include_pickles: bool) -> Manifest: ...
    def read_range(self, path: str, start: int, end: int, size: int) -> Iterator[bytes]:
        """Yield bytes [start, end) of `path` (whose full size is `size`); raise Transient or FetchError."""
        ...


@dataclass(frozen=True)
class Chunk:
    file: RemoteFile
    index: int
    start: int
    end: int  # exclusive
    part: Path

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_chunks(file: RemoteFile, dest: Path, chunk_size: int) -> list[Chunk]:
    target = dest / file.path
    bounds = list(range(0, file.size, chunk_size)) or [0]
    if len(bounds) == 1:
        return [Chunk(file, 0, 0, file.size, target.with_name(target.name + ".partial"))]
    return [
        Chunk(file, i, s, min(s + chunk_size, file.size), target.with_name(f"{target.name}.partial.{i}"))
        for i, s in enumerate(bounds)
    ]


def bytes_on_disk(manifest: Manifest, dest: Path, chunk_size: int) -> int:
    """Bytes of the manifest already in `dest` (finished files and parts), for the free-space check."""
    have = 0
    for f in manifest.files:
        if (dest / f.path).exists():
            have += f.size
            continue
        for c in plan_chunks(f, dest, chunk_size):
            have += min(c.part.stat().st_size, c.length) if c.part.exists() else 0
    return have


class Downloader:
    def __init__(self, store: Store, dest: Path, *, workers: int = 8, chunk_size: int = 64 << 20, retries: int = 5,
                 backoff_s: float = 0.5):
        self.store, self.dest = store, Path(dest)
        self.workers, self.chunk_size, self.retries, self.backoff_s = workers, chunk_size, retries, backoff_s
        self.bytes_downloaded = 0  # over the network in this run
        self._count_lock = threading.Lock()
        self._abort = threading.Event()  # set on the first failure so other chunks stop instead of finishing

    def run(self, manifest: Manifest) -> None:
        pending = {f.path: plan_chunks(f, self.dest, self.chunk_size) for f in manifest.files if not (self.dest / f.path).exists()}
        remaining = {path: len(chunks) for path, chunks in pending.items()}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fetch") as pool:
            futures: dict[Future, tuple[str, str]] = {}
            for path, chunks in pending.items():
                (self.dest / path).parent.mkdir(parents=True, exist_ok=True)
                for c in chunks:
                    futures[pool.submit(self._fetch_chunk, c)] = ("chunk", path)
            try:
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in done:
                        kind, path = futures.pop(fut)
                        fut.result()
                        if kind == "chunk":
                            remaining[path] -= 1
                            if remaining[path] == 0:
                                futures[pool.submit(self._finish_file, pending[path])] = ("file", path)
            except BaseException:
                self._abort.set()
                for fut in futures:
                    fut.cancel()
                raise

    def _fetch_chunk(self, c: Chunk) -> None:
        attempt = 0
        while True:
            have = c.part.stat().st_size if c.part.exists() else 0
            if have > c.length:  # left by a different chunk size or a bad write: start this chunk over
                c.part.unlink()
                have = 0
            if have == c.length:
                c.part.touch()  # an empty file has no bytes to fetch but still needs its part
                return
            try:
                with _writing(c.part, lambda: self._disk_full_hint(c)) as out:
                    for data in self.store.read_range(c.file.path, c.start + have, c.end, c.file.size):
                        if self._abort.is_set():
                            return  # the part keeps what it has; a later fetch resumes it
                        out.write(data)
                        with self._count_lock:
                            self.bytes_downloaded += len(data)
                got = c.part.stat().st_size
                if got != c.length:
                    raise Transient(f"{c.file.path}: got {got} of {c.length} bytes of chunk {c.index}")
                return
            except Transient as e:
                attempt += 1
                if attempt > self.retries:
                    raise FetchError(
                        ExitCode.UNAVAILABLE,
                        f"downloading {c.file.path} from {self.store.describe()} failed {attempt} times: {e}. "
                        "This is usually transient; the pod retries the fetch and resumes from the bytes on disk.",
                    ) from e
                time.sleep(self.backoff_s * 2 ** (attempt - 1))

    def _finish_file(self, chunks: list[Chunk]) -> None:
        f = chunks[0].file
        target = self.dest / f.path
        joined = target.with_name(target.name + ".partial")
        verifier = Verifier(f.checksum, f.size)
        if len(chunks) == 1:
            with open(joined, "rb") as src:
                while block := src.read(READ_BLOCK):
                    verifier.update(block)
                os.fsync(src.fileno())
        else:
            with _writing(joined, lambda: self._disk_full_hint(chunks[0]), mode="wb") as out:
                for c in chunks:
                    with open(c.part, "rb") as src:
                        while block := src.read(READ_BLOCK):
                            verifier.update(block)
                            out.write(block)
                    # Free each part once copied, so joining needs one chunk of headroom, not a file's worth.
                    # A crash here costs re-fetching the removed parts (the joined file is rewritten from scratch).
                    c.part.unlink()
                os.fsync(out.fileno())
        if not verifier.matches():
            joined.unlink()  # a corrupt file must be fetched again, not resumed
            raise FetchError(
                ExitCode.CHECKSUM,
                f"{f.path} from {self.store.describe()} failed verification: {f.checksum.kind} is "
                f"{verifier.hexdigest()}, the store says {f.checksum.value}. The partial file was removed; "
                "if this repeats, the stored file or a proxy in between is corrupting data.",
            )
        os.replace(joined, target)

    def _disk_full_hint(self, c: Chunk) -> str:
        usage = os.statvfs(self.dest)
        return (f"while writing {c.file.path} ({gib(c.file.size)}) into {self.dest}: "
                f"{gib(usage.f_bavail * usage.f_frsize)} free of {gib(usage.f_blocks * usage.f_frsize)}")


class _writing:
    """Open a part file for appending; turn ENOSPC into a FetchError that says how much space there is."""

    def __init__(self, path: Path, hint: Callable[[], str], mode: str = "ab"):
        self.path, self.hint, self.mode = path, hint, mode

    def __enter__(self):
        self.f = open(self.path, self.mode)
        return self.f

    def __exit__(self, typ, exc, tb):
        try:
            self.f.close()
        except OSError as e:
            exc = exc or e
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise FetchError(ExitCode.DISK_FULL, f"the model cache volume is full {self.hint()}; "
                             "give the cache volume more space or remove other models from it") from exc
        return False
