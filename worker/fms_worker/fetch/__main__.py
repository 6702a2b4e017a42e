"""`python -m fms_worker.fetch SOURCE`: fetch a model into the cache volume (the worker pod's init container).

Prints a JSON summary on stdout and writes it to the termination log, where
Kubernetes keeps it as the container's `terminated.message` for the operator
(whether the model was cached, how long the fetch took). On failure the
termination log gets the error message and the exit code says what kind of
failure it was (see fms_worker.fetch.errors.ExitCode and docs/model-sources.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from fms_worker.fetch.env import compile_cache_dir
from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.fetcher import FetchOptions, fetch
from fms_worker.fetch.local import DEFAULT_PVC_ROOT

TERMINATION_MESSAGE_LIMIT = 4096  # Kubernetes truncates beyond this


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="python -m fms_worker.fetch", description=__doc__.splitlines()[0])
    ap.add_argument("source", help="hf://org/name[@revision], s3://bucket/prefix, pvc://claim/path or /path/in/image")
    ap.add_argument("--cache-dir", default=env("FMS_CACHE_DIR", "/models"), help="cache volume mount (FMS_CACHE_DIR)")
    ap.add_argument("--compile-cache-dir", default=env("FMS_COMPILE_CACHE_DIR"),
                    help="torch.compile/Triton cache to create on the volume (default: <cache-dir>/.compile)")
    ap.add_argument("--hf-endpoint", default=env("HF_ENDPOINT"), help="Hub or mirror URL (HF_ENDPOINT)")
    ap.add_argument("--s3-endpoint", default=env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL"),
                    help="S3-compatible endpoint (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL); AWS when unset")
    ap.add_argument("--secret-name", default=env("FMS_SOURCE_SECRET"), help="Secret with the credentials, named in errors")
    ap.add_argument("--pvc-root", default=env("FMS_PVC_ROOT", DEFAULT_PVC_ROOT), help="where claims are mounted")
    ap.add_argument("--workers", type=int, default=int(env("FMS_FETCH_WORKERS", "8")), help="parallel ranged reads")
    ap.add_argument("--chunk-mib", type=int, default=64, help="bytes per ranged read, MiB")
    ap.add_argument("--retries", type=int, default=5, help="retries per chunk, each resuming from the bytes on disk")
    ap.add_argument("--include-pickles", action="store_true", help="also fetch *.bin/*.pt/*.pth/*.pkl (unsafe)")
    ap.add_argument("--lock-timeout", type=float, default=3600.0, help="seconds to wait for another pod's fetch")
    ap.add_argument("--termination-log", default=env("FMS_TERMINATION_LOG", "/dev/termination-log"))
    args = ap.parse_args(argv)
    if args.workers < 1 or args.chunk_mib < 1 or args.retries < 0:
        ap.error("--workers and --chunk-mib must be at least 1, --retries at least 0")
    return args


def _write_termination_log(path: str, text: str) -> None:
    try:
        Path(path).write_text(text[-TERMINATION_MESSAGE_LIMIT:])
    except OSError:
        pass  # not in a pod (no /dev/termination-log): stdout/stderr carry the same text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = FetchOptions(cache_dir=Path(args.cache_dir), hf_endpoint=args.hf_endpoint, hf_token=os.environ.get("HF_TOKEN"),
                        s3_endpoint=args.s3_endpoint, secret_name=args.secret_name, pvc_root=Path(args.pvc_root),
                        workers=args.workers, chunk_size=args.chunk_mib << 20, retries=args.retries,
                        include_pickles=args.include_pickles, lock_timeout_s=args.lock_timeout)
    try:
        result = fetch(args.source, opts)
        try:
            for sub in ("inductor", "triton"):
                (Path(args.compile_cache_dir or compile_cache_dir(opts.cache_dir)) / sub).mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # a read-only cache (PVC/image source without a cache volume): the worker compiles into its tmp
    except FetchError as e:
        print(f"fms-fetch: {e.message}", file=sys.stderr)
        _write_termination_log(args.termination_log, e.message)
        return int(e.code)
    except Exception as e:  # noqa: BLE001 - surface the last line to the operator rather than a bare crash
        msg = f"unexpected error fetching {args.source}: {type(e).__name__}: {e}"
        print(f"fms-fetch: {msg}", file=sys.stderr)
        _write_termination_log(args.termination_log, msg)
        raise
    summary = json.dumps(asdict(result))
    print(summary)
    _write_termination_log(args.termination_log, summary)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
