"""Streaming verification of a file against the checksum its store publishes.

- sha256: the Hub's LFS oid, or a SHA256SUMS manifest next to the files in S3
- git-sha1: the Hub's blob id for small (non-LFS) files: sha1("blob <size>\\0" + content)
- md5: the ETag of an S3 object uploaded in one part
- s3-multipart: the ETag "<md5 of the parts' md5s>-<parts>" of a multipart upload
"""

from __future__ import annotations

import hashlib

from fms_worker.fetch.manifest import Checksum


class Verifier:
    """Feed the file's bytes in order; `matches()` says whether they are what the store promised."""

    def __init__(self, checksum: Checksum, size: int):
        self.checksum = checksum
        self._seen = 0
        self._part_md5s: list[bytes] = []
        self._part_left = checksum.part_size
        if checksum.kind == "git-sha1":
            self._h = hashlib.sha1(f"blob {size}\0".encode())
        elif checksum.kind in ("md5", "s3-multipart"):
            self._h = hashlib.md5()
        elif checksum.kind == "sha256":
            self._h = hashlib.sha256()
        else:
            self._h = None

    def update(self, data: bytes | memoryview) -> None:
        self._seen += len(data)
        if self.checksum.kind != "s3-multipart":
            if self._h is not None:
                self._h.update(data)
            return
        view = memoryview(data)
        while len(view):
            take = min(self._part_left, len(view))
            self._h.update(view[:take])
            view = view[take:]
            self._part_left -= take
            if self._part_left == 0:
                self._close_part()

    def _close_part(self) -> None:
        self._part_md5s.append(self._h.digest())
        self._h = hashlib.md5()
        self._part_left = self.checksum.part_size

    def hexdigest(self) -> str:
        if self.checksum.kind == "none":
            return ""
        if self.checksum.kind != "s3-multipart":
            return self._h.hexdigest()
        parts = list(self._part_md5s)
        if self._part_left != self.checksum.part_size or not parts:  # a short last part is still open
            parts.append(self._h.copy().digest())
        return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"

    def matches(self) -> bool:
        return self.checksum.kind == "none" or self.hexdigest() == self.checksum.value.lower()
