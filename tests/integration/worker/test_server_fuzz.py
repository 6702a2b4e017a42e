"""Schema-driven fuzzing of the OpenAPI document (schemathesis): no input may produce a 5xx.

Real engine on CPU, so every generated body is capped to a couple of output tokens; the
number of examples is bounded to keep the run near a minute on the 2-core machine.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from fms_worker.config import WorkerConfig
from fms_worker.server.app import create_app
from fms_worker.server.runner import BackgroundServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = {("POST", "/v1/completions"): 25, ("POST", "/v1/chat/completions"): 25}
GET_EXAMPLES = 3


@pytest.fixture(scope="module")
def served(smollm2_dir):
    cfg = WorkerConfig.model_validate({
        "model": {"path": str(smollm2_dir), "served_name": "smollm2", "max_model_len": 64},
        "precision": {"dtype": "float32"}, "runtime": {"device": "cpu", "enforce_eager": True},
        "caching": {"num_kv_blocks": 128, "block_size": 16}, "batching": {"max_num_seqs": 32},
        "server": {"max_body_bytes": 65536},
    })
    app = create_app(cfg)
    with BackgroundServer(app) as srv:
        yield srv, app


def _cap(body, mode: GenerationMode):
    """Keep generation short on CPU; everything else is left as generated.

    Clamping only lowers max_tokens (invalid values stay invalid); n is clamped only for
    positive examples, since 17 -> 2 would turn an invalid body into a valid one.
    """
    if isinstance(body, dict):
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
                body[key] = min(body[key], 2)
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = 2
        if mode is GenerationMode.POSITIVE and isinstance(body.get("n"), int) and not isinstance(body["n"], bool):
            body["n"] = min(body["n"], 2)
    return body


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(served, mode):
    srv, app = served
    schema = schemathesis.openapi.from_dict(app.openapi())
    seen: dict[str, list[int]] = {}

    for operation in schema.get_all_operations():
        op = operation.ok()
        key = (op.method.upper(), op.path)
        if mode is GenerationMode.NEGATIVE and key not in EXAMPLES:
            continue  # GETs without parameters have no invalid form
        examples = EXAMPLES.get(key, GET_EXAMPLES)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def check(case):
            case.body = _cap(case.body, mode) if case.body is not None else case.body
            response = case.call(base_url=srv.url, timeout=120)
            seen.setdefault(f"{key[0]} {key[1]}", []).append(response.status_code)
            assert response.status_code < 500, (case.body, response.status_code, response.text[:500])

        check()

    assert set(seen) >= {"POST /v1/completions", "POST /v1/chat/completions"}
    if mode is GenerationMode.NEGATIVE:
        assert all(s == 400 for s in seen["POST /v1/completions"] + seen["POST /v1/chat/completions"]), seen
    assert httpx.get(f"{srv.url}/ready").status_code == 200  # the fuzzing left the worker healthy
    print({k: sorted(set(v)) for k, v in seen.items()})
