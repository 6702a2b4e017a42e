"""Fetch the real SmolLM2 directory from a local server that speaks the Hub's download protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fetch_hub_server import COMMIT, FakeHub
from huggingface_hub import hf_hub_download

from fms_worker.fetch.cache import MARKER, RECORD
from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.fetcher import FetchOptions, fetch

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
EXTRA = {"pytorch_model.bin": b"pickled weights", "README.md": b"# model card", ".gitattributes": b"*.bin lfs"}
CHUNK = 64 << 20


@pytest.fixture(scope="module")
def hub(smollm2_dir):
    with FakeHub(REPO, smollm2_dir, extra=EXTRA) as h:
        yield h


@pytest.fixture()
def fresh(hub):
    hub.requests.clear()
    hub.drop_once.clear()
    hub.corrupt.clear()
    return hub


def _opts(tmp_path: Path, hub: FakeHub, **kw) -> FetchOptions:
    return FetchOptions(cache_dir=tmp_path / "models", hf_endpoint=hub.endpoint, chunk_size=CHUNK, workers=4,
                        backoff_s=0.05, **kw)


def test_fake_hub_is_what_huggingface_hub_expects(fresh, smollm2_dir, tmp_path):
    got = hf_hub_download(REPO, "config.json", endpoint=fresh.endpoint, cache_dir=tmp_path, token=False)
    assert Path(got).read_bytes() == (smollm2_dir / "config.json").read_bytes()
    assert COMMIT in got  # the library resolved main to our commit from X-Repo-Commit


def test_fetch_resumes_after_a_drop_then_reuses_the_cache(fresh, smollm2_dir, tmp_path):
    fresh.drop_once["model.safetensors"] = 5_000_000
    result = fetch(f"hf://{REPO}", _opts(tmp_path, fresh))

    d = Path(result.path)
    wanted = sorted(p.name for p in smollm2_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    assert sorted(p.name for p in d.iterdir()) == sorted(wanted + [MARKER, RECORD])
    for name in wanted:
        assert (d / name).stat().st_size == (smollm2_dir / name).stat().st_size
    assert (d / "config.json").read_bytes() == (smollm2_dir / "config.json").read_bytes()
    assert not result.cached and result.revision == COMMIT and result.files == len(wanted)
    # the dropped chunk was asked again from where its bytes on disk ended
    ranges = [tuple(int(x) for x in r[2].removeprefix("bytes=").split("-")) for r in fresh.body_requests("model.safetensors")]
    resumed = [(s, e) for s, e in ranges if s % CHUNK]
    weights_size = (smollm2_dir / "model.safetensors").stat().st_size
    assert len(resumed) == 1 and len(ranges) == -(-weights_size // CHUNK) + 1  # every chunk once, one retry
    (start, end), chunk_start = resumed[0], resumed[0][0] // CHUNK * CHUNK
    assert start == chunk_start + 5_000_000 and (chunk_start, end) in ranges  # same chunk, from the partial size
    assert result.bytes_downloaded == result.bytes  # the 5 MB before the drop were not fetched twice
    assert not fresh.body_requests("pytorch_model.bin") and not fresh.body_requests("README.md")
    assert all(f"/resolve/{COMMIT}/" in r[1] for r in fresh.body_requests())  # pinned to the listed commit
    record = json.loads((d / RECORD).read_text())
    assert record["bytes"] == result.bytes and record["revision"] == COMMIT

    # second start: the CLI, as the init container runs it, finds the cache and reads no bytes
    fresh.requests.clear()
    log = tmp_path / "termination-log"
    out = subprocess.run(
        [sys.executable, "-m", "fms_worker.fetch", f"hf://{REPO}", "--cache-dir", str(tmp_path / "models"),
         "--termination-log", str(log)],
        env={**os.environ, "HF_ENDPOINT": fresh.endpoint}, capture_output=True, text=True, timeout=60, check=True)
    summary = json.loads(out.stdout)
    assert summary["cached"] is True and summary["path"] == result.path and summary["bytes_downloaded"] == 0
    assert summary["fetch_seconds"] == record["seconds"] and json.loads(log.read_text()) == summary
    assert fresh.requests == []


def test_corrupt_file_is_detected_and_no_marker_written(fresh, tmp_path):
    fresh.corrupt.add("tokenizer.json")
    with pytest.raises(FetchError) as e:
        fetch(f"hf://{REPO}", _opts(tmp_path, fresh))
    assert e.value.code == ExitCode.CHECKSUM and "tokenizer.json" in e.value.message and "sha256" in e.value.message
    d = next((tmp_path / "models").glob("HuggingFaceTB-*"))
    assert not (d / MARKER).exists() and not (d / "tokenizer.json").exists()


@pytest.mark.parametrize(
    "uri, token, code, says",
    [
        ("hf://nobody/missing", None, ExitCode.NOT_FOUND,
         "model hf://nobody/missing not found at {endpoint} (404); check the org/name; if the model is private"),
        (f"hf://{REPO}@v9.9", None, ExitCode.NOT_FOUND,
         f"revision 'v9.9' of model hf://{REPO} not found at {{endpoint}} (404); use a branch, tag or commit"),
        (f"hf://{REPO}", "wrong-token", ExitCode.CREDENTIALS,
         f"access to hf://{REPO} denied at {{endpoint}} (401); the token in Secret 'hf-token' is invalid"),
    ],
    ids=["missing-model", "wrong-revision", "bad-token"],
)
def test_errors_say_what_and_what_to_do(fresh, tmp_path, uri, token, code, says):
    fresh.token = "right-token" if token else None
    try:
        with pytest.raises(FetchError) as e:
            fetch(uri, _opts(tmp_path, fresh, hf_token=token, secret_name="hf-token"))
    finally:
        fresh.token = None
    assert e.value.code == code
    assert says.format(endpoint=fresh.endpoint) in e.value.message
    assert fresh.body_requests() == []


def test_cli_exit_code_and_termination_log_for_a_missing_model(fresh, tmp_path):
    log = tmp_path / "termination-log"
    out = subprocess.run(
        [sys.executable, "-m", "fms_worker.fetch", "hf://nobody/missing", "--cache-dir", str(tmp_path),
         "--hf-endpoint", fresh.endpoint, "--termination-log", str(log)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == ExitCode.NOT_FOUND == 3
    assert log.read_text().startswith(f"model hf://nobody/missing not found at {fresh.endpoint} (404)")


def test_two_pods_on_one_volume_download_each_byte_once(fresh, tmp_path):
    cmd = [sys.executable, "-m", "fms_worker.fetch", f"hf://{REPO}", "--cache-dir", str(tmp_path / "models"),
           "--hf-endpoint", fresh.endpoint, "--termination-log", str(tmp_path / "log")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(o["cached"] for o in outs) == [False, True] and outs[0]["path"] == outs[1]["path"]
    bodies = fresh.body_requests()
    assert len(bodies) == len({(path, rng) for _, path, rng in bodies})  # no file or chunk was fetched twice
    assert len(fresh.body_requests("config.json")) == 1
