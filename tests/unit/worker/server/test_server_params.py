"""Request -> prompt ids and SamplingParams: the table of what is accepted and what gets a 400."""

from __future__ import annotations

import pytest

from conftest import FakeTokenizer
from fms_worker.server.errors import APIError
from fms_worker.server.params import (ModelLimits, chat_prompt, check_completion_options, check_model,
                                      completion_prompts, sampling_params)
from fms_worker.server.protocol import ChatCompletionRequest, CompletionRequest

LIMITS = ModelLimits("smol", max_model_len=32, vocab_size=128)
TOK = FakeTokenizer()


@pytest.mark.parametrize("prompt, expected", [
    ("hi", [[104, 105]]),
    (["a", "bc"], [[97], [98, 99]]),
    ([5, 6, 7], [[5, 6, 7]]),
    ([[5], [6, 7]], [[5], [6, 7]]),
])
def test_prompt_shapes(prompt, expected):
    assert completion_prompts(CompletionRequest(prompt=prompt), TOK, LIMITS) == expected


@pytest.mark.parametrize("prompt, message", [
    ("", "empty"),
    ([], "non-empty"),
    ("x" * 32, "context is 32"),
    ([200], "outside the vocabulary"),
])
def test_bad_prompts(prompt, message):
    with pytest.raises(APIError, match=message) as info:
        completion_prompts(CompletionRequest(prompt=prompt), TOK, LIMITS)
    assert info.value.status == 400


def test_max_tokens_defaults_and_bounds():
    assert sampling_params(CompletionRequest(prompt="x"), 10, LIMITS).max_tokens == 16
    assert sampling_params(CompletionRequest(prompt="x"), 20, LIMITS).max_tokens == 12  # capped by the context
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}])
    assert sampling_params(chat, 10, LIMITS).max_tokens == 22  # chat: the rest of the context
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], max_completion_tokens=3, max_tokens=9)
    assert sampling_params(chat, 10, LIMITS).max_tokens == 3
    with pytest.raises(APIError, match="at most 22"):
        sampling_params(CompletionRequest(prompt="x", max_tokens=23), 10, LIMITS)


def test_sampling_fields_map_through():
    p = sampling_params(CompletionRequest(prompt="x", temperature=0, top_k=-1, stop=["", "END"], seed=7, n=2,
                                          ignore_eos=True, logprobs=3, stop_token_ids=[4]), 1, LIMITS)
    assert (p.temperature, p.top_k, p.stop, p.seed, p.n, p.ignore_eos, p.logprobs, p.stop_token_ids) == \
        (0, 0, ["END"], 7, 2, True, 3, [4])
    assert sampling_params(CompletionRequest(prompt="x", stop="\n"), 1, LIMITS).stop == ["\n"]


def test_chat_logprobs_options():
    base = {"messages": [{"role": "user", "content": "x"}]}
    assert sampling_params(ChatCompletionRequest(**base, logprobs=True, top_logprobs=2), 1, LIMITS).logprobs == 2
    assert sampling_params(ChatCompletionRequest(**base, logprobs=True), 1, LIMITS).logprobs == 0
    assert sampling_params(ChatCompletionRequest(**base), 1, LIMITS).logprobs is None
    with pytest.raises(APIError, match="needs logprobs"):
        sampling_params(ChatCompletionRequest(**base, top_logprobs=2), 1, LIMITS)


def test_chat_prompt_uses_the_template():
    req = ChatCompletionRequest(messages=[{"role": "system", "content": "s"},
                                          {"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert TOK.decode(chat_prompt(req, TOK, LIMITS)) == "<system>s<user>hi<assistant>"


def test_model_name_and_echo_checks():
    check_model(None, LIMITS)
    check_model("smol", LIMITS)
    with pytest.raises(APIError, match="use 'smol'"):
        check_model("gpt-4", LIMITS)
    with pytest.raises(APIError, match="echo"):
        check_completion_options(CompletionRequest(prompt="x", echo=True, logprobs=1))


def test_n_above_max_num_seqs_is_400():
    limits = ModelLimits("smol", max_model_len=32, vocab_size=128, max_num_seqs=2)
    with pytest.raises(APIError, match="at most 2"):
        sampling_params(CompletionRequest(prompt="x", n=3), 1, limits)
