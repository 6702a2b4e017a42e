"""Fetch a model source into the cache volume once, then reuse it: the orchestration of store, cache and download."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import Timeout

from fms_worker.fetch.cache import FetchRecord, ModelCache
from fms_worker.fetch.download import Downloader, Store, bytes_on_disk
from fms_worker.fetch.errors import ExitCode, FetchError, gib
from fms_worker.fetch.local import DEFAULT_PVC_ROOT, verify_local
from fms_worker.fetch.manifest import Manifest, has_weights
from fms_worker.fetch.source import ModelSource, cache_dir_name, parse_source


@dataclass(frozen=True)
class FetchOptions:
    cache_dir: Path = Path("/models")
    hf_endpoint: str | None = None
    hf_token: str | None = None
    s3_endpoint: str | None = None
    secret_name: str | None = None  # named in credential errors
    pvc_root: Path = Path(DEFAULT_PVC_ROOT)
    workers: int = 8
    chunk_size: int = 64 << 20
    retries: int = 5
    backoff_s: float = 0.5
    include_pickles: bool = False
    lock_timeout_s: float = 3600.0


@dataclass(frozen=True)
class FetchResult:
    path: str  # the model directory the worker loads
    source: str
    cached: bool  # True when nothing had to be downloaded (warm cache, PVC, image path)
    seconds: float  # this run's wall time
    bytes: int  # model size
    bytes_downloaded: int  # over the network in this run
    files: int
    revision: str | None = None
    fetch_seconds: float | None = None  # wall time of the fetch that filled the cache


def make_store(source: ModelSource, opts: FetchOptions) -> Store:
    if source.scheme == "hf":
        from fms_worker.fetch.hub import HubStore

        return HubStore(source, opts.hf_endpoint, opts.hf_token, opts.secret_name)
    from fms_worker.fetch.s3 import S3Store

    return S3Store(source, opts.s3_endpoint, opts.secret_name)


def fetch(uri: str, opts: FetchOptions, store: Store | None = None) -> FetchResult:
    t0 = time.monotonic()
    source = parse_source(uri)
    if not source.is_remote:
        d = verify_local(source, opts.pvc_root)
        files = [p for p in d.rglob("*") if p.is_file()]
        return FetchResult(str(d), uri, True, time.monotonic() - t0, sum(p.stat().st_size for p in files), 0, len(files))
    cache = ModelCache(opts.cache_dir, cache_dir_name(uri))
    if cache.is_complete():
        return _cached(cache, uri, t0)
    try:
        with cache.lock(opts.lock_timeout_s):
            if cache.is_complete():  # another replica finished while we waited
                return _cached(cache, uri, t0)
            return _download(source, cache, opts, store, t0)
    except Timeout as e:
        raise FetchError(ExitCode.UNAVAILABLE, f"waited {opts.lock_timeout_s:.0f} s for another pod to finish fetching "
                         f"{uri} into {cache.dir} (lock {cache.lock_path}); if no pod is fetching, delete the lock file") from e


def _cached(cache: ModelCache, uri: str, t0: float) -> FetchResult:
    rec = cache.read_record()
    return FetchResult(str(cache.dir), uri, True, time.monotonic() - t0, rec.bytes if rec else 0, 0,
                       rec.files if rec else 0, rec.revision if rec else None, rec.seconds if rec else None)


def _download(source: ModelSource, cache: ModelCache, opts: FetchOptions, store: Store | None, t0: float) -> FetchResult:
    own_store = store is None
    store = store or make_store(source, opts)
    try:
        manifest = store.list_files(opts.include_pickles)
        if not has_weights(manifest):
            pickles = [p for p in manifest.skipped if p.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
            why = f"only pickle checkpoints ({', '.join(pickles[:3])})" if pickles else "no *.safetensors files"
            raise FetchError(ExitCode.NO_WEIGHTS, f"model {store.describe()} has {why}; the worker loads safetensors "
                             "only: convert the checkpoint (e.g. save_pretrained(safe_serialization=True)) and publish it")
        cache.dir.mkdir(parents=True, exist_ok=True)
        _check_space(manifest, cache, opts, store.describe())
        downloader = Downloader(store, cache.dir, workers=opts.workers, chunk_size=opts.chunk_size,
                                retries=opts.retries, backoff_s=opts.backoff_s)
        downloader.run(manifest)
        seconds = time.monotonic() - t0
        cache.mark_complete(FetchRecord(source.uri, manifest.revision, len(manifest.files), manifest.total_bytes,
                                        round(seconds, 3), time.time()))
        return FetchResult(str(cache.dir), source.uri, False, seconds, manifest.total_bytes,
                           downloader.bytes_downloaded, len(manifest.files), manifest.revision, seconds)
    finally:
        if own_store:
            store.close()


def _check_space(manifest: Manifest, cache: ModelCache, opts: FetchOptions, what: str) -> None:
    needed = manifest.total_bytes - bytes_on_disk(manifest, cache.dir, opts.chunk_size)
    if any(f.size > opts.chunk_size for f in manifest.files):
        needed += opts.chunk_size  # joining a chunked file holds one part twice for a moment
    free = shutil.disk_usage(cache.dir).free
    if needed > free:
        raise FetchError(ExitCode.DISK_FULL, f"model {what} needs {gib(needed)} more in "
                         f"{opts.cache_dir} ({gib(manifest.total_bytes)} in all) but only {gib(free)} is free; "
                         "give the cache volume more space or remove other models from it")

