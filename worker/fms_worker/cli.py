"""`fms-worker serve MODEL_DIR [flags]` or `fms-worker serve --config worker.yaml [flags]`.

Flags and the YAML file build the same WorkerConfig (flags win), validated once.
A bad config is one clear line on stderr and exit code 2; a fatal start-up error
is also written to the Kubernetes termination log so `kubectl describe` shows it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fms_worker import __version__
from fms_worker.config import WorkerConfig

EXIT_BAD_CONFIG = 2
TERMINATION_LOG = "/dev/termination-log"

# flag -> (config section, field, argparse kwargs). One table: the parser and the mapping come from it.
_FLAGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "--task": ("model", "task", {"choices": ["generate", "embed", "classify"]}),
    "--served-name": ("model", "served_name", {}),
    "--max-model-len": ("model", "max_model_len", {"type": int}),
    "--dtype": ("precision", "dtype", {"choices": ["bfloat16", "float16", "float32"]}),
    "--quantization": ("precision", "quantization", {"choices": ["none", "int8", "int4", "fp8"]}),
    "--kv-cache-dtype": ("precision", "kv_cache_dtype", {"choices": ["auto", "fp8"]}),
    "--tensor-parallel-size": ("parallel", "tensor", {"type": int}),
    "--pipeline-parallel-size": ("parallel", "pipeline", {"type": int}),
    "--max-num-seqs": ("batching", "max_num_seqs", {"type": int}),
    "--max-num-batched-tokens": ("batching", "max_num_batched_tokens", {"type": int}),
    "--max-waiting": ("batching", "max_waiting", {"type": int}),
    "--block-size": ("caching", "block_size", {"type": int}),
    "--num-kv-blocks": ("caching", "num_kv_blocks", {"type": int}),
    "--gpu-memory-utilization": ("caching", "gpu_memory_utilization", {"type": float}),
    "--cpu-kv-cache-bytes": ("caching", "cpu_kv_cache_bytes", {"type": int}),
    "--host": ("server", "host", {}),
    "--port": ("server", "port", {"type": int}),
    "--metrics-port": ("server", "metrics_port", {"type": int}),
    "--drain-seconds": ("server", "drain_seconds", {"type": int}),
    "--max-body-bytes": ("server", "max_body_bytes", {"type": int}),
    "--api-key": ("server", "api_key", {}),
    "--device": ("runtime", "device", {"choices": ["auto", "cpu", "cuda"]}),
    "--seed": ("runtime", "seed", {"type": int}),
    "--async-scheduling": ("runtime", "async_scheduling", {"choices": ["auto", "on", "off"]}),
}
_SWITCHES = {  # store_true flags: (section, field, value when given)
    "--enforce-eager": ("runtime", "enforce_eager", True),
    "--no-prefix-caching": ("caching", "prefix_caching", False),
    "--no-chunked-prefill": ("batching", "chunked_prefill", False),
    "--tp-invariant": ("precision", "tp_invariant", True),
}


class ConfigError(Exception):
    """A config the worker cannot start with; the message says what to change."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fms-worker", description="Inference server for foundation models.")
    parser.add_argument("--version", action="version", version=f"fms-worker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    serve.add_argument("model_dir", nargs="?", help="local model directory (config.json, *.safetensors, tokenizer)")
    serve.add_argument("--config", help="worker.yaml (the document the operator renders); flags override it")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    for flag, (_, _, kwargs) in _FLAGS.items():
        serve.add_argument(flag, default=None, **kwargs)
    for flag in _SWITCHES:
        serve.add_argument(flag, action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """The one WorkerConfig for these arguments; ConfigError with a one-line reason otherwise."""
    doc: dict[str, Any] = {}
    if args.config:
        try:
            doc = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read --config {args.config}: {exc}") from exc
        if not isinstance(doc, dict):
            raise ConfigError(f"--config {args.config} must hold a mapping (model:, server:, ...)")
    if args.model_dir:
        doc.setdefault("model", {})["path"] = args.model_dir
    if "path" not in (doc.get("model") or {}):
        raise ConfigError("no model: pass MODEL_DIR or --config with model.path")
    for flag, (section, name, _) in _FLAGS.items():
        value = getattr(args, _dest(flag))
        if value is not None:
            doc.setdefault(section, {})[name] = value
    for flag, (section, name, value) in _SWITCHES.items():
        if getattr(args, _dest(flag)):
            doc.setdefault(section, {})[name] = value
    try:
        config = WorkerConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from exc
    if not Path(config.model.path).is_dir():
        raise ConfigError(f"model.path {config.model.path} is not a directory; point it at the model files")
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return _fatal(f"invalid config: {exc}", EXIT_BAD_CONFIG)
    from fms_worker.fetch.env import apply_compile_cache
    from fms_worker.parallel.group import pod_group

    # Before anything compiles: Inductor/Triton caches on the model cache volume make the next start faster.
    apply_compile_cache(config.caching.compile_cache_dir)

    try:
        group = pod_group(os.environ)
    except ValueError as exc:
        return _fatal(f"invalid pipeline group: {exc}", EXIT_BAD_CONFIG)
    if group is not None and not group.is_leader:  # a group follower: no API, it executes the leader's steps
        from fms_worker.engine.distributed import follow_group

        try:
            return follow_group(config, group)
        except Exception as exc:  # e.g. the leader went away
            logging.getLogger("fms_worker").exception("group follower failed")
            return _fatal(f"pipeline group follower {group.index} failed: {exc}", 1)
    from fms_worker.server.runner import serve  # heavy imports only once the config is good

    try:
        return serve(config, on_fatal=write_termination_log, log_level=args.log_level)
    except Exception as exc:  # e.g. encoder task without encoder support, port in use
        logging.getLogger("fms_worker").exception("start-up failed")
        return _fatal(f"start-up failed: {exc}", 1)


def write_termination_log(message: str) -> None:
    """Best effort: Kubernetes shows this file's content as the container's termination message."""
    path = os.environ.get("FMS_TERMINATION_LOG", TERMINATION_LOG)
    try:
        with open(path, "w") as f:
            f.write(message[:4000] + "\n")  # the kubelet keeps at most 4096 bytes
    except OSError:
        pass


def _fatal(message: str, code: int) -> int:
    print(f"fms-worker: {message}", file=sys.stderr)
    write_termination_log(message)
    return code


def _one_line(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "config"
        parts.append(f"{loc}: {e['msg']}" + (f" (got {e['input']!r})" if "input" in e and
                                             not isinstance(e["input"], dict) else ""))
    return "; ".join(parts)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


if __name__ == "__main__":
    sys.exit(main())
