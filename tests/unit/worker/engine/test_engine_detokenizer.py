"""Incremental detokenization: same text as a full decode, stop strings cut, fast path equal to transformers."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from fms_worker.engine.detokenizer import IncrementalDetokenizer, raw_decoder


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def _random_ids(tok, n, seed):
    rng = random.Random(seed)
    specials = list(tok.all_special_ids)
    return [rng.choice(specials) if rng.random() < 0.1 else rng.randrange(len(tok)) for _ in range(n)]


@pytest.mark.parametrize("skip", [True, False])
def test_fast_path_decodes_like_transformers(tok, skip):
    fast = raw_decoder(tok)
    assert fast is not None  # SmolLM2 is a BPE tokenizer: no clean-up pass, so the fast path applies
    for seed in range(20):
        ids = _random_ids(tok, 40, seed)
        assert fast(ids, skip_special_tokens=skip) == tok.decode(ids, skip_special_tokens=skip)


def test_wordpiece_with_cleanup_keeps_the_full_path(minilm_dir):
    bert = AutoTokenizer.from_pretrained(minilm_dir)  # WordPiece
    ids = bert.encode("Hello , world ! It ' s fine .")
    bert.clean_up_tokenization_spaces = False
    assert raw_decoder(bert)(ids, skip_special_tokens=True) == bert.decode(ids, skip_special_tokens=True)
    bert.clean_up_tokenization_spaces = True  # transformers would now run its clean-up pass: no fast path
    assert raw_decoder(bert) is None


def test_deltas_join_to_the_full_text(tok):
    prompt = tok.encode("The quick brown fox")
    out = tok.encode(" jumps over the lazy dog. Ünïcödé → 東京 ok")
    d = IncrementalDetokenizer(tok, prompt, True, [])
    text = ""
    for t in out:
        d.append(t)
        text += d.delta(finished=False)
    text += d.delta(finished=True)
    assert text == tok.decode(out, skip_special_tokens=True)


def test_stop_string_is_cut_and_held_back(tok):
    out = tok.encode(" one two STOP three")
    d = IncrementalDetokenizer(tok, tok.encode("Count:"), True, ["STOP"])
    streamed = ""
    for t in out:
        d.append(t)
        streamed += d.delta(finished=d.hit is not None)
        if d.hit:
            break
    assert d.hit == "STOP"
    assert streamed == d.text == " one two "
