"""In-flight inputs (async scheduling): both input builders leave the row for the device to fill, and the
runner fills it from the previous launch's draw. The GPU's builder runs here on CPU tensors."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from fms_worker.engine.types import SamplingParams
from fms_worker.model_runner.inputs import build_inputs
from fms_worker.model_runner.paged_inputs import build_paged_inputs
from fms_worker.model_runner.runner import ModelRunner
from fms_worker.scheduler.output import ScheduledSeq

P = SamplingParams(temperature=0.0)


def _step() -> list[ScheduledSeq]:
    prefill = ScheduledSeq(seq_id=7, token_ids=[11, 12, 13], start=0, num_new=3, block_ids=[0], sample=True,
                           params=P, num_prompt_tokens=3)
    # Known tokens 21..25 (5), one more sampled by the step still in flight: this step computes position 5.
    decode = ScheduledSeq(seq_id=9, token_ids=[21, 22, 23, 24, 25], start=5, num_new=1, block_ids=[1, 2],
                          sample=True, params=P, num_prompt_tokens=4, inflight_input=True)
    plain = ScheduledSeq(seq_id=4, token_ids=[31, 32, 33], start=2, num_new=1, block_ids=[3], sample=True,
                         params=P, num_prompt_tokens=2)
    return [prefill, decode, plain]


def test_both_builders_leave_the_in_flight_row_to_the_device():
    for inputs in (build_inputs(_step(), 4, torch.device("cpu")),
                   build_paged_inputs(_step(), 4, torch.device("cpu"), scratch_block=99, num_kv_heads=2)):
        assert inputs.input_ids.tolist() == [11, 12, 13, 0, 33]
        assert inputs.positions.tolist() == [0, 1, 2, 5, 2]
        assert inputs.inflight_rows == [(3, 9)]


def test_the_runner_fills_it_from_the_last_draw():
    inputs = build_paged_inputs(_step(), 4, torch.device("cpu"), scratch_block=99, num_kv_heads=2)
    runner = SimpleNamespace(device=torch.device("cpu"), _last_rows={5: 0, 9: 1},
                             _last_tokens=torch.tensor([500, 901]))
    ModelRunner._fill_inflight(runner, inputs)
    assert inputs.input_ids.tolist() == [11, 12, 13, 901, 33]
