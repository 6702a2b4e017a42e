"""A fake engine with LLMEngine's interface: one token per running request per step, fixed KV blocks."""

from __future__ import annotations

import threading
import time

import pytest

from fms_worker.engine.types import CompletionOutput, EngineStats, RequestOutput, RequestTimes, SamplingParams


class FakeTokenizer:
    """Characters are tokens: id = ord(c) (ASCII), so text and ids map one to one."""

    eos_token_id = 0

    def __len__(self) -> int:
        return 128

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) % 128 for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


class FakeEngine:
    def __init__(self, max_num_seqs: int = 4, num_blocks: int = 64, step_seconds: float = 0.002,
                 max_model_len: int = 200_000):
        self.tokenizer = FakeTokenizer()
        self.max_model_len = max_model_len
        self.eos_token_ids = [0]
        self.max_num_seqs = max_num_seqs
        self.num_blocks = num_blocks
        self.step_seconds = step_seconds
        self.requests: dict[str, dict] = {}  # insertion order = FCFS
        self.thread_ids: set[int] = set()
        self.steps = 0
        self.generated = 0

    def add_request(self, request_id, prompt_token_ids, params: SamplingParams, arrival=None):
        self.thread_ids.add(threading.get_ident())
        if len(prompt_token_ids) + params.max_tokens > self.max_model_len:
            raise ValueError(f"prompt ({len(prompt_token_ids)}) + max_tokens exceeds {self.max_model_len}")
        self.requests[request_id] = {"prompt": list(prompt_token_ids), "params": params, "out": [],
                                     "times": RequestTimes(arrival or time.monotonic())}

    def abort_request(self, request_id):
        self.thread_ids.add(threading.get_ident())
        self.requests.pop(request_id, None)

    def _running(self) -> list[str]:
        return list(self.requests)[: self.max_num_seqs]

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[RequestOutput]:
        self.thread_ids.add(threading.get_ident())
        time.sleep(self.step_seconds)
        self.steps += 1
        outputs = []
        now = time.monotonic()
        for rid in self._running():
            r = self.requests[rid]
            token = ord("a") + len(r["out"]) % 26
            r["out"].append(token)
            self.generated += 1
            t = r["times"]
            t.first_token = t.first_token or now
            t.last_token = now
            done = len(r["out"]) >= r["params"].max_tokens
            if done:
                t.finished = now
                del self.requests[rid]
            o = CompletionOutput(0, list(r["out"]), "".join(map(chr, r["out"])), new_token_ids=[token],
                                 new_text=chr(token), finish_reason="length" if done else None)
            outputs.append(RequestOutput(rid, r["prompt"], [o], done, t))
        return outputs

    def stats(self) -> EngineStats:
        running = len(self._running())
        used = 2 * running
        return EngineStats(num_running=running, num_waiting=len(self.requests) - running,
                           kv_cache_usage=used / self.num_blocks, num_kv_blocks=self.num_blocks,
                           num_free_kv_blocks=self.num_blocks - used, steps=self.steps,
                           generation_tokens=self.generated, last_batch_size=running)


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()
