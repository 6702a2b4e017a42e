"""Cold start: time from an empty cache and from a warm cache to the first token.

Starts a local S3-compatible server (moto) and uploads a model to it, or
(--source hub) serves the model directory through the repository's local
stand-in for the Hugging Face Hub (standard library only, so it runs on the
GPU machines). Then runs the worker's start-up twice in fresh processes, as a
new pod would:
fetch (python -m fms_worker.fetch logic) -> engine load -> first token.
The first run finds an empty cache volume, the second the cache the first filled.

    .venv/bin/python bench/cold_start.py                 # SmolLM2-135M, CPU
    .venv/bin/python bench/cold_start.py --gpu-shape 8b  # Llama-3-8B shape, random bf16 weights, on CUDA
    python3 bench/cold_start.py --gpu-shape 8b --source hub --work-dir /tmp/cold  # GPU machine, no moto there

Figures are wall-clock seconds measured in each child process from its start
(imports included). The page cache is not dropped between runs (that needs
root); the warm run is what a restarted pod on the same node sees.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUCKET, PREFIX = "models", "bench/model"
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0)


def write_random_llama(out: Path, tokenizer_from: Path, shape: dict, shard_bytes: int = 5 << 30) -> None:
    """A Llama-shaped checkpoint with random bf16 weights, in HF shard layout with an index."""
    import torch
    from safetensors.torch import save_file

    h, i, L, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    tensors = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for n in range(L):
        p = f"model.layers.{n}."
        tensors |= {p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                    p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                    p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                    p + "post_attention_layernorm.weight": (h,)}
    out.mkdir(parents=True, exist_ok=True)
    shards, current, size = [], {}, 0
    for name, shp in tensors.items():
        current[name] = shp
        size += 2 * int(torch.Size(shp).numel())
        if size >= shard_bytes:
            shards.append(current)
            current, size = {}, 0
    shards += [current] if current else []
    weight_map, gen = {}, torch.Generator().manual_seed(0)
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16) for n, s in shard.items()},
                  str(out / fname), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, fname)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "hidden_act": "silu", **shape}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for p in tokenizer_from.iterdir():
        if p.name.startswith("tokenizer") or p.name.endswith(".jinja"):
            shutil.copy(p, out / p.name)


def run_once(args: argparse.Namespace) -> None:
    """One pod start, in this (fresh) process: fetch, load, first token. Prints a JSON line."""
    t0 = time.monotonic()
    from fms_worker.fetch.env import apply_compile_cache, compile_cache_dir
    from fms_worker.fetch.fetcher import FetchOptions, fetch

    apply_compile_cache(compile_cache_dir(args.cache))
    if args.source == "hub":
        opts = FetchOptions(cache_dir=Path(args.cache), hf_endpoint=args.endpoint)
        result = fetch(f"hf://{BUCKET}/{PREFIX.replace('/', '-')}", opts)
    else:
        result = fetch(f"s3://{BUCKET}/{PREFIX}", FetchOptions(cache_dir=Path(args.cache), s3_endpoint=args.endpoint))
    t_fetch = time.monotonic()
    from fms_worker.config import WorkerConfig
    from fms_worker.engine.llm_engine import LLMEngine
    from fms_worker.engine.types import SamplingParams

    t_import = time.monotonic()
    gpu = args.device == "cuda"
    config = WorkerConfig.model_validate({
        "model": {"path": result.path, "max_model_len": 2048},
        "precision": {"dtype": "bfloat16" if gpu else "float32"},
        "caching": {"num_kv_blocks": 256, "compile_cache_dir": str(compile_cache_dir(args.cache))},
        "runtime": {"device": args.device},
    })
    engine = LLMEngine(config)
    t_load = time.monotonic()
    prompt = engine.tokenizer("The capital of France is")["input_ids"]
    engine.add_request("bench", prompt, SamplingParams(temperature=0.0, max_tokens=1))
    while not any(o.outputs[0].token_ids for o in engine.step()):
        pass
    t_first = time.monotonic()
    print(json.dumps({"cached": result.cached, "bytes": result.bytes, "fetch_s": round(t_fetch - t0, 3),
                      "engine_import_s": round(t_import - t_fetch, 3), "engine_load_s": round(t_load - t_import, 3),
                      "first_token_s": round(t_first - t_load, 3), "total_s": round(t_first - t0, 3)}))


@contextlib.contextmanager
def _s3(model_dir: Path):
    """A local S3 server (moto) holding the model; yields its endpoint."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from moto.server import ThreadedMotoServer

    os.environ.update(CREDS)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET)
        t = time.monotonic()
        for p in sorted(model_dir.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                s3.upload_file(str(p), BUCKET, f"{PREFIX}/{p.name}", Config=TransferConfig(max_concurrency=8))
        print(f"uploaded {model_dir} to {endpoint}/{BUCKET}/{PREFIX} in {time.monotonic() - t:.1f} s (not counted)")
        yield endpoint
    finally:
        server.stop()


@contextlib.contextmanager
def _hub(model_dir: Path):
    """The local Hub stand-in serving the model directory as BUCKET/PREFIX-with-dashes; yields its endpoint."""
    sys.path.insert(0, str(REPO / "tests" / "integration" / "fetch"))
    from fetch_hub_server import FakeHub

    t = time.monotonic()
    hub = FakeHub(f"{BUCKET}/{PREFIX.replace('/', '-')}", model_dir)  # hashes every file once
    print(f"serving {model_dir} as a Hub repo at {hub.endpoint} (set up in {time.monotonic() - t:.1f} s, not counted)")
    with hub:
        yield hub.endpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-shape", choices=["8b"], help="random weights of this shape, on CUDA (default: SmolLM2 on CPU)")
    ap.add_argument("--model-dir", type=Path, help="model to serve (default: SmolLM2 via hack/prepare_models.py)")
    ap.add_argument("--work-dir", type=Path, help="where the cache and generated weights go (default: a temp dir)")
    ap.add_argument("--source", choices=["s3", "hub"], default="s3",
                    help="s3: a local moto server; hub: the local Hub stand-in (tests/integration/fetch)")
    ap.add_argument("--tokenizer-from", type=Path, help="tokenizer files for --gpu-shape (default: SmolLM2's)")
    ap.add_argument("--out", type=Path, help="also write the two runs as JSON here")
    ap.add_argument("--run-once", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_once:
        return run_once(args)

    sys.path.insert(0, str(REPO / "hack"))
    import prepare_models

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fms-cold-start-"))
    smollm2 = prepare_models.prepare("smollm2-135m") if not args.tokenizer_from else args.tokenizer_from
    model_dir = args.model_dir or smollm2
    if args.gpu_shape:
        model_dir = work / "source-8b"
        if not (model_dir / "config.json").exists():
            t = time.monotonic()
            write_random_llama(model_dir, smollm2, LLAMA_8B)
            print(f"wrote random Llama-8B weights to {model_dir} in {time.monotonic() - t:.1f} s")
    with (_hub(model_dir) if args.source == "hub" else _s3(model_dir)) as endpoint:
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        device = "cuda" if args.gpu_shape else "cpu"
        runs = {}
        for label in ("empty cache", "warm cache"):
            out = subprocess.run([sys.executable, __file__, "--run-once", "--cache", str(cache), "--endpoint", endpoint,
                                  "--device", device, "--source", args.source], check=True, capture_output=True,
                                 text=True)
            r = runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{label:12s} ({device}): fetch {r['fetch_s']:7.2f} s ({r['bytes'] / 1e6:,.0f} MB, cached={r['cached']}) "
                  f"+ engine import {r['engine_import_s']:5.2f} s + load {r['engine_load_s']:6.2f} s "
                  f"+ first token {r['first_token_s']:5.2f} s = {r['total_s']:7.2f} s to first token")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "source": args.source, "model": str(model_dir), **runs},
                                       indent=2))
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
