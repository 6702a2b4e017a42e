"""A pipeline group of two "pods" on one machine: pod 0 serves, pod 1 executes stage 1, output equals one process.

Pod 1 is the real `fms-worker serve --config` with the FMS_GROUP_* variables the
operator renders (the leader's DNS name replaced by 127.0.0.1, the rendezvous
port by a free one); pod 0 is the leader's engine in this process, built by the
same make_runner the server uses. Gloo on CPU; pipeline 2, one stage per pod.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams
from fms_worker.parallel import group as pod_group
from fms_worker.parallel.launch import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


def _doc(model_dir, pipeline: int, port: int) -> dict:
    return {"model": {"path": str(model_dir)}, "precision": {"dtype": "float32"}, "runtime": {"device": "cpu"},
            "parallel": {"pipeline": pipeline}, "caching": {"num_kv_blocks": 32, "block_size": 8},
            "server": {"host": "127.0.0.1", "port": port}}


def _group_env(index: int, rendezvous: int) -> dict[str, str]:
    return {pod_group.ENV_SIZE: "2", pod_group.ENV_INDEX: str(index), pod_group.ENV_LEADER: "127.0.0.1",
            pod_group.ENV_PORT: str(rendezvous)}


def _greedy(engine: LLMEngine, prompts: list[list[int]]) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in engine.generate(prompts, GREEDY)]


@pytest.fixture(scope="module")
def prompts(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    return [tok(p)["input_ids"] for p in PROMPTS]


def test_two_pod_pipeline_group_matches_one_process(smollm2_dir, prompts, tmp_path, monkeypatch):
    reference = _greedy(LLMEngine(WorkerConfig.model_validate(_doc(smollm2_dir, 1, 8000))), prompts)

    rendezvous, follower_port = free_port(), free_port()
    cfg = tmp_path / "worker.yaml"
    cfg.write_text(yaml.safe_dump(_doc(smollm2_dir, 2, follower_port)))
    env = {**os.environ, **_group_env(1, rendezvous), "FMS_TERMINATION_LOG": str(tmp_path / "termination-log")}
    with open(tmp_path / "pod1.log", "wb") as log:
        pod1 = subprocess.Popen([sys.executable, "-m", "fms_worker.cli", "serve", "--config", str(cfg),
                                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        for key, value in _group_env(0, rendezvous).items():
            monkeypatch.setenv(key, value)
        leader = LLMEngine(WorkerConfig.model_validate(_doc(smollm2_dir, 2, 8000)))  # waits for pod 1 to join
        try:
            follower = f"http://127.0.0.1:{follower_port}"
            assert httpx.get(f"{follower}/health").status_code == 200
            assert httpx.get(f"{follower}/ready").status_code == 200  # it took part in the KV cache allocation
            assert httpx.post(f"{follower}/v1/completions", json={}).status_code == 404  # only the leader serves
            assert _greedy(leader, prompts) == reference
        finally:
            leader.runner.close()
        assert pod1.wait(timeout=60) == 0, (tmp_path / "pod1.log").read_text()  # stopped with its group
    finally:
        if pod1.poll() is None:
            pod1.kill()
            pod1.wait()


def test_pod_outside_its_group_is_refused_with_a_clear_message(smollm2_dir, tmp_path):
    cfg = tmp_path / "worker.yaml"
    cfg.write_text(yaml.safe_dump(_doc(smollm2_dir, 2, free_port())))
    env = {**os.environ, **_group_env(1, free_port()), pod_group.ENV_INDEX: "2"}  # no pod 2 in a group of 2
    proc = subprocess.run([sys.executable, "-m", "fms_worker.cli", "serve", "--config", str(cfg)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "FMS_GROUP_RANK=2 is outside the group of FMS_GROUP_SIZE=2 pods" in proc.stderr


def test_follower_pod_exits_when_its_leader_dies(smollm2_dir, tmp_path):
    rendezvous = free_port()
    procs = []
    for index in (1, 0):  # both real `fms-worker serve`; pod 0 starts the HTTP server once the group is whole
        port = free_port()
        cfg = tmp_path / f"pod{index}.yaml"
        cfg.write_text(yaml.safe_dump(_doc(smollm2_dir, 2, port)))
        env = {**os.environ, **_group_env(index, rendezvous), "FMS_TERMINATION_LOG": str(tmp_path / f"term{index}")}
        with open(tmp_path / f"pod{index}.log", "wb") as log:
            procs.append((subprocess.Popen([sys.executable, "-m", "fms_worker.cli", "serve", "--config", str(cfg)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env), port))
    (pod1, _), (pod0, leader_port) = procs
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert pod0.poll() is None, (tmp_path / "pod0.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{leader_port}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the leader never became ready:\n" + (tmp_path / "pod0.log").read_text())
        pod0.kill()  # no clean stop: the follower must notice the lost connection by itself
        assert pod1.wait(timeout=60) != 0
        assert "pipeline group follower 1 failed" in (tmp_path / "term1").read_text()
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
