"""Scheduler on CPU with a fake model runner: budget, chunking, mixing, preemption, FCFS, seats, forks."""

from __future__ import annotations

from fms_worker.engine.types import SamplingParams
from fms_worker.kv_cache import KVCacheManager
from fms_worker.scheduler import ModelRunnerOutput, Scheduler, SchedulerConfig, SchedulerOutput

EOS = 2


def make(num_blocks=64, block_size=4, max_num_seqs=8, budget=32, max_model_len=256, chunked=True, caching=True):
    kv = KVCacheManager(num_blocks, block_size, enable_caching=caching)
    cfg = SchedulerConfig(max_num_seqs, budget, max_model_len, chunked)
    return Scheduler(cfg, kv, {EOS})


def fake_run(out: SchedulerOutput, token=lambda item: 100 + item.seq_id) -> ModelRunnerOutput:
    return ModelRunnerOutput(sampled={s.seq_id: token(s) for s in out.seqs if s.sample})


def drain(sched: Scheduler, max_steps=1000, check=None):
    steps = []
    for _ in range(max_steps):
        if not sched.has_unfinished():
            return steps
        out = sched.schedule()
        if check:
            check(sched, out)
        steps.append(out)
        sched.update(out, fake_run(out))
    raise AssertionError("scheduler did not drain")


def params(max_tokens=4, **kw):
    return SamplingParams(max_tokens=max_tokens, **kw)


def test_token_budget_is_respected_and_long_prompt_is_chunked():
    sched = make(budget=16)
    seq = sched.add("a", list(range(40)), params(), 0.0)
    steps = drain(sched, check=lambda s, o: o.num_batched_tokens <= 16)
    starts = [o.seqs[0].start for o in steps[:3]]
    assert starts == [0, 16, 32]
    assert [o.seqs[0].sample for o in steps[:3]] == [False, False, True]
    assert seq.finish_reason == "length" and seq.output_token_ids == [100] * 4


def test_decode_and_prefill_share_a_step():
    sched = make(budget=16)
    sched.add("a", list(range(5)), params(max_tokens=10), 0.0)
    out = sched.schedule()
    sched.update(out, fake_run(out))
    sched.add("b", list(range(50, 90)), params(), 1.0)
    out = sched.schedule()
    kinds = {s.seq_id: (s.num_new, s.sample) for s in out.seqs}
    assert kinds[0] == (1, True)  # decode
    assert kinds[1] == (15, False)  # prefill chunk takes the rest of the budget
    assert out.num_batched_tokens == 16


def test_max_num_seqs_caps_running():
    sched = make(max_num_seqs=3)
    for i in range(7):
        sched.add(f"r{i}", [1, 3, 4, 5], params(), float(i))
    drain(sched, check=lambda s, o: len(s.running) <= 3 and len(o.seqs) <= 3)


def test_fcfs_admission_order():
    sched = make(max_num_seqs=2)
    seqs = [sched.add(f"r{i}", [10 + i] * 3, params(max_tokens=2), float(i)) for i in range(5)]
    first_seen = {}
    for step, out in enumerate(drain(sched)):
        for s in out.seqs:
            first_seen.setdefault(s.seq_id, step)
    order = sorted(first_seen, key=lambda k: (first_seen[k], k))
    assert order == [s.seq_id for s in seqs]


def test_preemption_never_loses_a_request():
    sched = make(num_blocks=10, block_size=4, max_num_seqs=8, budget=64)
    seqs = [sched.add(f"r{i}", list(range(i, i + 9)), params(max_tokens=12), float(i)) for i in range(6)]
    drain(sched, check=lambda s, o: s.kv.pool.num_used <= 10)
    assert sched.num_preemptions > 0
    for seq in seqs:
        assert seq.finish_reason == "length" and seq.num_output_tokens == 12
    assert sched.kv.pool.num_free == 10


def test_preempted_sequence_recomputes_its_generated_tokens():
    sched = make(num_blocks=4, block_size=4, max_num_seqs=4, budget=64, caching=False)
    a = sched.add("a", list(range(7)), params(max_tokens=8), 0.0)
    b = sched.add("b", list(range(20, 27)), params(max_tokens=8), 1.0)
    recomputed = []

    def check(s, out):
        for item in out.seqs:
            if item.seq_id == b.seq_id and item.start == 0 and b.num_output_tokens > 0:
                recomputed.append(item.num_new)

    drain(sched, check=check)
    assert sched.num_preemptions >= 1
    assert recomputed and recomputed[0] > 7  # prompt plus the tokens it had generated
    assert a.num_output_tokens == 8 and b.num_output_tokens == 8


def test_prefix_hit_advances_computed_tokens():
    sched = make(block_size=4)
    prefix = list(range(30, 42))  # three full blocks
    a = sched.add("a", prefix + [1], params(max_tokens=1), 0.0)
    drain(sched)
    b = sched.add("b", prefix + [7, 8], params(max_tokens=1), 1.0)
    out = sched.schedule()
    assert out.seqs[0].start == 12 and out.seqs[0].num_new == 2
    assert b.num_cached_tokens == 12 and a.num_cached_tokens == 0
    assert sched.kv.prefix_hits == 12


def test_stop_token_eos_and_ignore_eos():
    sched = make()
    s1 = sched.add("a", [5, 6], params(max_tokens=5, stop_token_ids=[42]), 0.0)
    s2 = sched.add("b", [5, 6], params(max_tokens=5), 0.0)
    s3 = sched.add("c", [5, 6], params(max_tokens=5, ignore_eos=True), 0.0)
    tokens = {s1.seq_id: 42, s2.seq_id: EOS, s3.seq_id: EOS}
    while sched.has_unfinished():
        out = sched.schedule()
        sched.update(out, fake_run(out, token=lambda item: tokens[item.seq_id]))
    assert (s1.finish_reason, s1.stop_reason, s1.num_output_tokens) == ("stop", 42, 1)
    assert (s2.finish_reason, s2.stop_reason, s2.num_output_tokens) == ("stop", None, 1)
    assert (s3.finish_reason, s3.num_output_tokens) == ("length", 5)


def test_abort_frees_blocks_and_reports_to_runner():
    sched = make()
    seq = sched.add("a", list(range(10)), params(max_tokens=50), 0.0)
    out = sched.schedule()
    sched.update(out, fake_run(out))
    assert sched.kv.pool.num_used > 0
    assert sched.abort("a") == [seq]
    assert seq.finish_reason == "abort" and sched.kv.pool.num_used == 0
    assert not sched.has_unfinished()
    assert sched.schedule().finished_seq_ids == [seq.seq_id]


def test_n2_forks_share_prompt_blocks():
    sched = make(block_size=4, caching=False)
    leader = sched.add("a", list(range(10)), params(max_tokens=3, n=2), 0.0)
    out = sched.schedule()
    sched.update(out, fake_run(out))
    assert len(sched.running) == 2
    sib = sched.running[1]
    assert (sib.index, sib.num_computed_tokens) == (1, 8)
    out = sched.schedule()
    tables = {s.seq_id: s.block_ids for s in out.seqs}
    assert tables[leader.seq_id][:2] == tables[sib.seq_id][:2]
    assert tables[leader.seq_id][2] != tables[sib.seq_id][2]
    sched.update(out, fake_run(out))
    drain(sched)
    assert leader.num_output_tokens == 3 and sib.num_output_tokens == 3
    assert sched.kv.pool.num_free == 64


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_budget():
    sched = make(budget=16, chunked=False)
    sched.add("a", list(range(5)), params(max_tokens=3), 0.0)
    out = sched.schedule()
    sched.update(out, fake_run(out))
    sched.add("b", list(range(50, 66)), params(max_tokens=1), 1.0)
    out = sched.schedule()  # 1 decode token + 16 would exceed 16: b waits
    assert [s.num_new for s in out.seqs] == [1]
    sched.update(out, fake_run(out))
    steps = drain(sched)
    assert any(s.num_new == 16 and s.start == 0 for o in steps for s in o.seqs)


def test_add_rejects_prompt_over_budget_without_chunking():
    sched = make(budget=16, chunked=False)
    try:
        sched.add("a", list(range(17)), params(), 0.0)
    except ValueError as e:
        assert "chunked_prefill" in str(e)
    else:
        raise AssertionError("expected ValueError")
