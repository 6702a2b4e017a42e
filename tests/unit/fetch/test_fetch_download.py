"""Checksums, chunk planning and the resumable download against an in-memory store."""

from __future__ import annotations

import hashlib
import os

import pytest
from fetch_memory_store import MemoryStore

from fms_worker.fetch.checksum import Verifier
from fms_worker.fetch.download import Downloader, plan_chunks
from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.manifest import Checksum, RemoteFile

DATA = os.urandom(10_000)


def _feed(checksum: Checksum, data: bytes, step: int) -> Verifier:
    v = Verifier(checksum, len(data))
    for i in range(0, len(data), step):
        v.update(data[i:i + step])
    return v


def _multipart_etag(data: bytes, part: int) -> str:
    md5s = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"


@pytest.mark.parametrize("step", [1, 7, 4096, 20_000])
@pytest.mark.parametrize(
    "checksum",
    [
        Checksum("sha256", hashlib.sha256(DATA).hexdigest()),
        Checksum("md5", hashlib.md5(DATA).hexdigest()),
        Checksum("git-sha1", hashlib.sha1(b"blob 10000\0" + DATA).hexdigest()),
        Checksum("s3-multipart", _multipart_etag(DATA, 3000), part_size=3000),  # short last part
        Checksum("s3-multipart", _multipart_etag(DATA, 2500), part_size=2500),  # even parts
        Checksum("s3-multipart", _multipart_etag(DATA, 10_000), part_size=10_000),  # one part
    ],
    ids=["sha256", "md5", "git-sha1", "multipart-short-tail", "multipart-even", "multipart-one"],
)
def test_verifier_accepts_right_bytes_and_rejects_one_flipped_byte(checksum, step):
    assert _feed(checksum, DATA, step).matches()
    assert not _feed(checksum, DATA[:-1] + bytes([DATA[-1] ^ 1]), step).matches()


def test_git_sha1_matches_git():
    # `printf hello | git hash-object --stdin`
    assert _feed(Checksum("git-sha1", "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"), b"hello", 2).matches()


def test_plan_chunks(tmp_path):
    f = RemoteFile("sub/w.safetensors", 250, Checksum("none"))
    chunks = plan_chunks(f, tmp_path, 100)
    assert [(c.start, c.end) for c in chunks] == [(0, 100), (100, 200), (200, 250)]
    assert [c.part.name for c in chunks] == [f"w.safetensors.partial.{i}" for i in range(3)]
    (one,) = plan_chunks(f, tmp_path, 250)
    assert (one.start, one.end, one.part.name) == (0, 250, "w.safetensors.partial")
    (empty,) = plan_chunks(RemoteFile("e.json", 0, Checksum("none")), tmp_path, 100)
    assert (empty.start, empty.end) == (0, 0)


def _store() -> MemoryStore:
    return MemoryStore({"model.safetensors": os.urandom(5000), "config.json": b'{"a": 1}', "empty.txt": b""})


def test_download_writes_verified_files_and_no_partials(tmp_path):
    store = _store()
    d = Downloader(store, tmp_path, workers=4, chunk_size=1024)
    d.run(store.list_files(False))
    for path, data in store.files.items():
        assert (tmp_path / path).read_bytes() == data
    assert not list(tmp_path.glob("*.partial*"))
    assert d.bytes_downloaded == 5000 + 8
    assert len([r for r in store.ranges if r[0] == "model.safetensors"]) == 5  # parallel chunks


def test_dropped_connection_resumes_from_partial_size(tmp_path):
    store = _store()
    store.drop_after["model.safetensors"] = 700
    Downloader(store, tmp_path, workers=2, chunk_size=1 << 20, backoff_s=0).run(store.list_files(False))
    assert (tmp_path / "model.safetensors").read_bytes() == store.files["model.safetensors"]
    assert [r for r in store.ranges if r[0] == "model.safetensors"] == [("model.safetensors", 0, 5000),
                                                                        ("model.safetensors", 700, 5000)]


def test_chunk_resume_starts_inside_its_chunk(tmp_path):
    store = _store()
    store.drop_after["model.safetensors"] = 300  # hits whichever chunk asks first
    Downloader(store, tmp_path, workers=1, chunk_size=1024, backoff_s=0).run(store.list_files(False))
    assert (tmp_path / "model.safetensors").read_bytes() == store.files["model.safetensors"]
    first = next(r for r in store.ranges if r[0] == "model.safetensors")
    assert ("model.safetensors", first[1] + 300, first[2]) in store.ranges


def test_resume_across_runs_uses_bytes_on_disk(tmp_path):
    store = _store()
    (tmp_path / "model.safetensors.partial").write_bytes(store.files["model.safetensors"][:1234])
    Downloader(store, tmp_path, chunk_size=1 << 20).run(store.list_files(False))
    assert ("model.safetensors", 1234, 5000) in store.ranges and ("model.safetensors", 0, 5000) not in store.ranges
    assert (tmp_path / "model.safetensors").read_bytes() == store.files["model.safetensors"]


def test_corrupt_file_fails_and_leaves_nothing_that_looks_whole(tmp_path):
    store = _store()
    store.corrupt.add("model.safetensors")
    with pytest.raises(FetchError) as e:
        Downloader(store, tmp_path, chunk_size=1024).run(store.list_files(False))
    assert e.value.code == ExitCode.CHECKSUM
    assert "model.safetensors" in e.value.message and "failed verification" in e.value.message
    assert not (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("model.safetensors.partial*"))  # corrupt bytes are not resumed


def test_gives_up_after_retries_with_unavailable(tmp_path):
    class Flaky(MemoryStore):
        def read_range(self, path, start, end, size):
            self.drop_after[path] = 10
            return super().read_range(path, start, end, size)

    store = Flaky({"model.safetensors": os.urandom(100)})
    with pytest.raises(FetchError) as e:
        Downloader(store, tmp_path, retries=2, backoff_s=0).run(store.list_files(False))
    assert e.value.code == ExitCode.UNAVAILABLE and "failed 3 times" in e.value.message
    # progress is kept: each retry asked for the bytes after those already on disk
    assert [r[1] for r in store.ranges] == [0, 10, 20]
