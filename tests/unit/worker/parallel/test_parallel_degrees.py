"""Degree checks say which degrees would work; layer splits and stage splits."""

import pytest

from fms_worker.parallel.stages import stage_layers
from fms_worker.parallel.state import check_pipeline_parallel, check_tensor_parallel, divide


def test_smollm2_tp2_message():
    with pytest.raises(ValueError) as err:
        check_tensor_parallel(2, num_heads=9, num_kv_heads=3)
    assert str(err.value) == "tensor parallel 2 does not divide 9 attention heads; use 1, 3 or 9"


@pytest.mark.parametrize("tp,heads,kv", [(3, 9, 3), (1, 9, 3), (2, 4, 1), (4, 32, 8), (8, 32, 8), (8, 32, 2), (2, 8, 2)])
def test_degrees_that_fit(tp, heads, kv):
    check_tensor_parallel(tp, heads, kv)


def test_kv_heads_neither_split_nor_replicated():
    with pytest.raises(ValueError, match="tensor parallel 4 does not fit 3 key/value heads.*use 1, 3, 6 or 12"):
        check_tensor_parallel(4, num_heads=12, num_kv_heads=3)


def test_divide_lists_choices():
    with pytest.raises(ValueError, match=r"tensor parallel 3 does not divide the input size \(32\); use 1, 2, 4, 8 or 16"):
        divide(32, 3, "the input size")


@pytest.mark.parametrize("layers,pp,expected", [
    (30, 2, [(0, 15), (15, 30)]),
    (30, 4, [(0, 8), (8, 16), (16, 23), (23, 30)]),
    (2, 2, [(0, 1), (1, 2)]),
])
def test_stage_layers(layers, pp, expected):
    assert [stage_layers(layers, pp, s) for s in range(pp)] == expected


def test_too_many_stages():
    with pytest.raises(ValueError, match="pipeline parallel 3 exceeds the model's 2 layers; use at most 2"):
        check_pipeline_parallel(3, 2)
