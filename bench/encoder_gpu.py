"""Encoder throughput on one GPU: BERT-base shapes, random weights, sequence length 128.

    python bench/encoder_gpu.py --out results.json [--dtypes float16 bfloat16] [--batches 1 8 32 128 256 512]

Self-contained: needs only torch (transformers for the optional baseline) and
this repository's worker/ package, which the script puts on sys.path itself.
For each dtype it measures, through the serving path (EncoderRunner: pad, host
to device copy, forward, mean pooling, normalize, copy back):
- eager and CUDA-graph (one graph per padded shape) sequences/s per batch size;
- batch 1 and saturation (the best batch) per mode;
- the dynamic batcher fed by many concurrent single-sequence submitters;
- transformers' BertModel (sdpa) at the same shapes, unless --no-baseline.
It checks that graph outputs equal eager outputs before timing them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "worker"))

from fms_worker.encoders.batch_policy import BatchPolicy  # noqa: E402
from fms_worker.encoders.batcher import DynamicBatcher  # noqa: E402
from fms_worker.encoders.bert import BertArgs, BertModel  # noqa: E402
from fms_worker.encoders.loader import LoadedEncoder  # noqa: E402
from fms_worker.device import DTYPES  # noqa: E402
from fms_worker.encoders.runner import EncoderRunner  # noqa: E402

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512)
SEQ_LEN = 128


def encoder() -> LoadedEncoder:
    torch.manual_seed(0)
    model = BertModel(BertArgs(**BERT_BASE)).eval()
    return LoadedEncoder(kind="embed", model=model, max_len=512, pooling="mean", normalize=True, dimension=768,
                         vocab_size=BERT_BASE["vocab_size"])


def batch_of(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 30000, (n, SEQ_LEN), generator=g).tolist()


def seqs_per_s(fn, n: int, min_s: float = 1.0) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    iters, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_s or iters < 5:
        fn()
        iters += 1
    torch.cuda.synchronize()  # run() already synced via .cpu(); this keeps baselines honest too
    return n * iters / (time.perf_counter() - start)


def bench_runner(dtype: str, batches: list[int]) -> dict:
    enc = encoder()
    out: dict = {}
    eager = EncoderRunner(enc, torch.device("cuda"), DTYPES[dtype], max_batch_size=max(batches))
    graphs = EncoderRunner(enc, torch.device("cuda"), DTYPES[dtype], cuda_graphs=True, max_batch_size=max(batches))
    probe = batch_of(5, seed=1)
    a, b = eager.run(probe)[0], graphs.run(probe)[0]
    out["graph_vs_eager_min_cosine"] = float((torch.from_numpy(a) * torch.from_numpy(b)).sum(1).min())
    for name, runner in (("eager", eager), ("cuda_graphs", graphs)):
        out[name] = {}
        for n in batches:
            payload = batch_of(n)
            out[name][n] = round(seqs_per_s(lambda: runner.run(payload), n), 1)
    out["batcher_saturation"] = round(asyncio.run(batcher_rate(graphs, max(batches))), 1)
    out["cuda_graphs_captured"] = len(graphs.graphs)
    return out


async def batcher_rate(runner: EncoderRunner, max_batch: int, total: int = 8192) -> float:
    """Many concurrent single-sequence submitters; the batcher forms the batches."""
    batcher = DynamicBatcher(runner.run, BatchPolicy(max_batch_size=max_batch, max_queue_delay_s=0.002),
                             max_waiting=total)
    seqs = batch_of(total, seed=2)
    await asyncio.gather(*(batcher.submit(s, SEQ_LEN) for s in seqs[:max_batch]))  # warm-up
    start = time.perf_counter()
    await asyncio.gather(*(batcher.submit(s, SEQ_LEN) for s in seqs))
    elapsed = time.perf_counter() - start
    await batcher.close()
    return total / elapsed


def bench_transformers(dtype: str, batches: list[int]) -> dict:
    from transformers import BertConfig
    from transformers import BertModel as HFBert

    model = HFBert(BertConfig(**BERT_BASE), add_pooling_layer=False).to("cuda", DTYPES[dtype]).eval()
    out = {}
    with torch.inference_mode():
        for n in batches:
            ids = torch.tensor(batch_of(n), device="cuda")
            mask = torch.ones_like(ids)
            out[n] = round(seqs_per_s(lambda: model(input_ids=ids, attention_mask=mask).last_hidden_state.mean(1)
                                      .cpu(), n), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results.json"))
    ap.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"], choices=["float16", "bfloat16"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32, 128, 256, 512])
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "model": "bert-base (random)",
               "seq_len": SEQ_LEN, "unit": "sequences/s", "runs": {}}
    for dtype in args.dtypes:
        r = bench_runner(dtype, args.batches)
        if not args.no_baseline:
            r["transformers"] = bench_transformers(dtype, args.batches)
        results["runs"][dtype] = r
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{results['gpu']}, BERT-base random weights, seq len {SEQ_LEN}, sequences/s")
    modes = ["eager", "cuda_graphs"] + ([] if args.no_baseline else ["transformers"])
    print(f"{'dtype':<10}{'mode':<14}" + "".join(f"{'b=' + str(n):>11}" for n in args.batches) + f"{'sat.':>11}")
    for dtype, r in results["runs"].items():
        for mode in modes:
            row = r[mode]
            print(f"{dtype:<10}{mode:<14}" + "".join(f"{row[n]:>11.0f}" for n in args.batches)
                  + f"{max(row.values()):>11.0f}")
        print(f"{dtype:<10}{'batcher':<14}{'(concurrent single-sequence submitters, graphs)':>44}"
              f"{r['batcher_saturation']:>22.0f}")
        print(f"{'':<10}graph vs eager min cosine {r['graph_vs_eager_min_cosine']:.5f}, "
              f"{r['cuda_graphs_captured']} graphs captured")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
