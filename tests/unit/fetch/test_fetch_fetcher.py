"""The fetch orchestration: cache marker and record, reuse, lock, local sources, disk space, the CLI contract."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from fetch_memory_store import MemoryStore

from fms_worker.fetch import __main__ as cli
from fms_worker.fetch.cache import MARKER, RECORD, ModelCache
from fms_worker.fetch.env import apply_compile_cache, compile_cache_env
from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.fetcher import FetchOptions, fetch
from fms_worker.fetch.source import cache_dir_name

URI = "hf://org/tiny@main"


def _store() -> MemoryStore:
    return MemoryStore({"model.safetensors": os.urandom(4000), "config.json": b"{}", "pytorch_model.bin": b"pickle"})


def _opts(tmp_path: Path, **kw) -> FetchOptions:
    return FetchOptions(cache_dir=tmp_path / "cache", chunk_size=1024, backoff_s=0, **kw)


def test_fetch_then_reuse_without_reading_bytes(tmp_path):
    store = _store()
    first = fetch(URI, _opts(tmp_path), store)
    d = Path(first.path)
    assert d == tmp_path / "cache" / cache_dir_name(URI)
    assert not first.cached and first.bytes == 4002 and first.bytes_downloaded == 4002 and first.files == 2
    assert first.revision == "rev1"
    assert sorted(p.name for p in d.iterdir()) == sorted(["model.safetensors", "config.json", MARKER, RECORD])
    record = json.loads((d / RECORD).read_text())
    assert record["bytes"] == 4002 and record["revision"] == "rev1" and record["seconds"] >= 0

    store.ranges.clear()
    again = fetch(URI, _opts(tmp_path), store)
    assert again.cached and again.path == first.path and again.bytes == 4002 and again.bytes_downloaded == 0
    assert again.fetch_seconds == record["seconds"]
    assert store.ranges == []


def test_crash_before_marker_means_not_cached_and_resume(tmp_path):
    store = _store()
    store.corrupt.add("model.safetensors")
    with pytest.raises(FetchError):
        fetch(URI, _opts(tmp_path), store)
    cache = ModelCache(tmp_path / "cache", cache_dir_name(URI))
    assert cache.dir.exists() and not cache.is_complete()  # config.json may be there; the model is not whole
    store.corrupt.clear()
    store.ranges.clear()
    result = fetch(URI, _opts(tmp_path), store)
    assert not result.cached and cache.is_complete()
    assert {r[0] for r in store.ranges} == {"model.safetensors"}  # the verified config.json was kept


def test_two_replicas_on_one_volume_fetch_once(tmp_path):
    store = _store()
    gate = threading.Event()
    original = store.list_files

    def slow_list(include_pickles):
        gate.wait(5)  # hold the lock until the second replica is waiting on it
        return original(include_pickles)

    store.list_files = slow_list
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch(URI, _opts(tmp_path), store))) for _ in range(2)]
    for t in threads:
        t.start()
    threading.Timer(0.3, gate.set).start()
    for t in threads:
        t.join(10)
    assert sorted(r.cached for r in results) == [False, True]
    assert len([r for r in store.ranges if r[0] == "config.json"]) == 1


def test_no_safetensors_names_the_pickles(tmp_path):
    store = MemoryStore({"pytorch_model.bin": b"x", "config.json": b"{}"})
    with pytest.raises(FetchError) as e:
        fetch(URI, _opts(tmp_path), store)
    assert e.value.code == ExitCode.NO_WEIGHTS and "pytorch_model.bin" in e.value.message
    assert "convert" in e.value.message


def test_disk_full_is_refused_before_downloading_with_sizes(tmp_path, monkeypatch):
    store = MemoryStore({"model.safetensors": os.urandom(3 << 20), "config.json": b"{}"})
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(FetchError) as e:
        fetch(URI, _opts(tmp_path), store)
    assert e.value.code == ExitCode.DISK_FULL
    assert "needs 0.00 GiB more" in e.value.message and "only 0.00 GiB is free" in e.value.message
    assert "cache volume more space" in e.value.message and store.ranges == []


def test_local_sources_are_verified_not_copied(tmp_path):
    model = tmp_path / "claims" / "weights" / "llama"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"12345")
    r = fetch("pvc://weights/llama", _opts(tmp_path, pvc_root=tmp_path / "claims"))
    assert r.path == str(model) and r.cached and r.bytes == 7 and r.files == 2
    assert fetch(str(model), _opts(tmp_path)).path == str(model)
    with pytest.raises(FetchError) as e:
        fetch("pvc://weights/missing", _opts(tmp_path, pvc_root=tmp_path / "claims"))
    assert e.value.code == ExitCode.NOT_FOUND and "claim 'weights'" in e.value.message
    (model / "model.safetensors").unlink()
    with pytest.raises(FetchError) as e:
        fetch(str(model), _opts(tmp_path))
    assert e.value.code == ExitCode.NO_WEIGHTS


def test_cli_writes_termination_log_and_exit_code(tmp_path, capsys):
    log = tmp_path / "termination-log"
    code = cli.main(["hf://not a model", "--cache-dir", str(tmp_path), "--termination-log", str(log)])
    assert code == ExitCode.BAD_SOURCE == 2
    assert "is not valid" in log.read_text() and "is not valid" in capsys.readouterr().err

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "a.safetensors").write_bytes(b"x")
    assert cli.main([str(model), "--cache-dir", str(tmp_path / "c"), "--termination-log", str(log)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(model) and summary["cached"] is True
    assert json.loads(log.read_text()) == summary
    assert (tmp_path / "c" / ".compile" / "triton").is_dir()


def test_compile_cache_env(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine"))
    applied = apply_compile_cache(tmp_path / ".compile")
    assert applied == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / ".compile" / "inductor")}
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "mine")  # the operator's or user's setting wins
    assert (tmp_path / ".compile" / "inductor").is_dir() and (tmp_path / "mine").is_dir()
    assert compile_cache_env("/models/.compile")["TRITON_CACHE_DIR"] == "/models/.compile/triton"
    assert apply_compile_cache(None) == {}
