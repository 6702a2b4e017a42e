"""Encoder serving on CPU: requests/s of the fms encoder service vs calling transformers once per request.

    python bench/encoder_cpu.py [--model DIR] [--requests 128] [--concurrency 32]

Same inputs both ways: `--requests` single-sentence embedding requests of mixed
length. fms: all requests in flight at once through the HTTP routes (in-process
ASGI), dynamic batching on. Baseline: a loop that tokenizes one request, runs
transformers' BertModel, mean-pools and normalizes, as a naive server would.
Prints requests/s for both and the ratio. The model defaults to all-MiniLM-L6-v2
(hack/prepare_models.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
WORDS = ("serving models on kubernetes needs batching, metrics and a careful scheduler that keeps "
         "every accelerator busy while latency stays low for interactive users").split()


def inputs(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 7) % len(WORDS):] + WORDS[: (i * 3) % 20])[: 20 + (i * 37) % 200] for i in range(n)]


def baseline(model_dir: Path, texts: list[str]) -> float:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        model(**tok(texts[0], return_tensors="pt"))  # warm-up
        start = time.perf_counter()
        for t in texts:
            batch = tok(t, return_tensors="pt", truncation=True, max_length=256)
            hidden = model(**batch).last_hidden_state
            m = batch["attention_mask"][..., None].float()
            torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
    return len(texts) / (time.perf_counter() - start)


async def fms(model_dir: Path, texts: list[str], concurrency: int, delay_us: int, max_batch: int) -> tuple[float, dict]:
    import httpx

    from fms_worker.config import WorkerConfig
    from fms_worker.server.encoder_routes import build_encoder_service, router
    from fastapi import FastAPI

    config = WorkerConfig.model_validate({
        "model": {"path": str(model_dir), "task": "embed"}, "precision": {"dtype": "float32"},
        "runtime": {"device": "cpu", "enforce_eager": True},
        "batching": {"max_batch_size": max_batch, "max_queue_delay_us": delay_us}})
    service = build_encoder_service(config)
    await service.start()
    app = FastAPI()
    app.include_router(router)
    app.state.encoder_service = service
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as client:
        async def one(t: str) -> None:
            async with sem:
                r = await client.post("/v1/embeddings", json={"input": t})
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one(t) for t in texts))
        elapsed = time.perf_counter() - start
    reg = service.observer.registry
    stats = {"batches": reg.get_sample_value("fms_encoder_batch_size_count"),
             "mean_batch": reg.get_sample_value("fms_encoder_batch_size_sum")
             / reg.get_sample_value("fms_encoder_batch_size_count")}
    await service.stop()
    return len(texts) / elapsed, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = ap.parse_args()
    if args.model is None:
        sys.path.insert(0, str(REPO / "hack"))
        import prepare_models

        args.model = prepare_models.prepare("all-minilm-l6-v2")
    texts = inputs(args.requests)
    base = baseline(args.model, texts)
    ours, stats = asyncio.run(fms(args.model, texts, args.concurrency, args.max_queue_delay_us, args.max_batch_size))
    result = {"model": args.model.name, "requests": args.requests, "concurrency": args.concurrency,
              "torch_threads": torch.get_num_threads(), "transformers_per_request_rps": round(base, 1),
              "fms_rps": round(ours, 1), "ratio": round(ours / base, 2), **stats}
    print(f"{'path':<34}{'requests/s':>12}")
    print(f"{'transformers, one call per request':<34}{base:>12.1f}")
    print(f"{'fms encoder service (batched)':<34}{ours:>12.1f}")
    print(f"ratio fms / transformers: {ours / base:.2f}x  (mean batch {stats['mean_batch']:.1f} over "
          f"{stats['batches']:.0f} batches)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
