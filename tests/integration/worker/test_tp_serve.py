"""`fms-worker serve --config` with parallel.tensor: 2 spawns its ranks, serves, and takes them down with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams
from fms_worker.server.runner import free_port
from tiny_models import write_tiny_llama

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PROMPT = [5, 17, 99, 3, 42]


def _config(model_dir: Path, port: int, **parallel) -> dict:
    return {"model": {"path": str(model_dir)}, "precision": {"dtype": "float32"}, "runtime": {"device": "cpu"},
            "parallel": parallel, "caching": {"num_kv_blocks": 32, "block_size": 8},
            "server": {"host": "127.0.0.1", "port": port, "drain_seconds": 1}}


def _start(tmp_path: Path, doc: dict) -> tuple[subprocess.Popen, Path]:
    """The worker process and its termination-log path; its output goes to worker.log."""
    cfg = tmp_path / "worker.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    term = tmp_path / "termination-log"
    env = {**os.environ, "FMS_TERMINATION_LOG": str(term)}
    with open(tmp_path / "worker.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "fms_worker.cli", "serve", "--config", str(cfg),
                                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, term


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_serve_tp2_answers_like_tp1_and_stops_its_ranks(tmp_path):
    model_dir = write_tiny_llama(tmp_path / "tiny")
    engine = LLMEngine(WorkerConfig.model_validate(_config(model_dir, 8000)))
    expected = engine.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))[0]
    expected_words = [f"t{i}" for i in expected.outputs[0].token_ids]  # the word tokenizer: token i is "t<i>"
    del engine

    port = free_port()
    proc, _ = _start(tmp_path, _config(model_dir, port, tensor=2))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            try:
                ready = httpx.get(f"{url}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.3)
        assert ready.json()["topology"]["tensor"] == 2
        followers = _children(proc.pid)
        assert len(followers) == 1 and _alive(followers[0])
        r = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                                                       "ignore_eos": True, "skip_special_tokens": False}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"].split() == expected_words
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    log_text = (tmp_path / "worker.log").read_text()
    assert proc.returncode == 0, log_text[-3000:]
    # The followers got the stop message: none was gone first, leaving rank 0 to abort at exit.
    assert "could not stop followers cleanly" not in log_text, log_text[-3000:]
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in followers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in followers), "a follower rank outlived the server"


def test_nvlink_required_without_gpus_refuses_to_start(tmp_path):
    model_dir = write_tiny_llama(tmp_path / "tiny")
    proc, term = _start(tmp_path, _config(model_dir, free_port(), tensor=2, interconnect="nvlink-required"))
    assert proc.wait(120) != 0
    assert "nvlink-required" in term.read_text()
