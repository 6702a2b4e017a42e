"""fms-worker CLI: flags and YAML build one WorkerConfig; bad config is one line, exit 2, termination log."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from fms_worker import __version__
from fms_worker.cli import build_parser, config_from_args, ConfigError, main


def _config(argv):
    return config_from_args(build_parser().parse_args(argv))


def test_flags_build_the_config(tmp_path):
    cfg = _config(["serve", str(tmp_path), "--dtype", "float32", "--port", "9000", "--device", "cpu",
                   "--max-num-seqs", "4", "--quantization", "int8", "--enforce-eager", "--no-prefix-caching",
                   "--metrics-port", "9090", "--api-key", "k"])
    assert (cfg.precision.dtype, cfg.server.port, cfg.runtime.device, cfg.batching.max_num_seqs) == \
        ("float32", 9000, "cpu", 4)
    assert cfg.precision.quantization == "int8" and cfg.runtime.enforce_eager and not cfg.caching.prefix_caching
    assert cfg.server.metrics_port == 9090 and cfg.server.api_key == "k" and cfg.model.path == str(tmp_path)


def test_tp_invariant_switch(tmp_path):
    assert _config(["serve", str(tmp_path), "--tp-invariant", "--tensor-parallel-size", "2"]).precision.tp_invariant
    assert not _config(["serve", str(tmp_path)]).precision.tp_invariant


def test_yaml_with_flag_overrides(tmp_path):
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(tmp_path), "task": "generate"},
                                    "server": {"port": 8001, "drain_seconds": 5}}))
    cfg = _config(["serve", "--config", str(path), "--port", "8002"])
    assert cfg.server.port == 8002 and cfg.server.drain_seconds == 5


@pytest.mark.parametrize("argv, needle", [
    (["serve"], "no model"),
    (["serve", "/definitely/not/here"], "is not a directory"),
    (["serve", "{tmp}", "--max-num-seqs", "0"], "batching.max_num_seqs"),
    (["serve", "--config", "{tmp}/missing.yaml"], "cannot read"),
    (["serve", "{tmp}", "--tp-invariant", "--tensor-parallel-size", "3"], "tensor degree 1, 2, 4 or 8, not 3"),
    (["serve", "{tmp}", "--tp-invariant", "--quantization", "int4"], "tp_invariant runs unquantized dense weights"),
])
def test_bad_config_messages(tmp_path, argv, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        _config([a.replace("{tmp}", str(tmp_path)) for a in argv])


def test_bad_config_exits_2_with_one_line_and_termination_log(tmp_path, monkeypatch, capsys):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("FMS_TERMINATION_LOG", str(log))
    (tmp_path / "worker.yaml").write_text("model: {path: /x}\nbatching: {max_num_seqs: -1}\n")
    assert main(["serve", "--config", str(tmp_path / "worker.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "batching.max_num_seqs" in err
    assert "batching.max_num_seqs" in log.read_text()


def test_version():
    out = subprocess.run([sys.executable, "-m", "fms_worker.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"fms-worker {__version__}"


def test_model_load_failure_exits_1_with_termination_log(tmp_path):
    from fms_worker.server.runner import free_port

    empty_model = tmp_path / "model"
    empty_model.mkdir()
    log = tmp_path / "termination-log"
    out = subprocess.run([sys.executable, "-m", "fms_worker.cli", "serve", str(empty_model), "--device", "cpu",
                          "--host", "127.0.0.1", "--port", str(free_port()), "--log-level", "error"],
                         capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "FMS_TERMINATION_LOG": str(log)})
    assert out.returncode == 1, out.stderr[-2000:]
    assert log.read_text().startswith("model load failed")


def test_compile_cache_goes_to_the_configured_dir_before_anything_loads(tmp_path):
    import os

    from fms_worker.server.runner import free_port

    empty_model = tmp_path / "model"
    empty_model.mkdir()
    cache = tmp_path / "compile"
    cfg = tmp_path / "worker.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"path": str(empty_model)}, "runtime": {"device": "cpu"},
        "server": {"host": "127.0.0.1", "port": free_port()}, "caching": {"compile_cache_dir": str(cache)},
    }))
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env["FMS_TERMINATION_LOG"] = str(tmp_path / "termination-log")
    out = subprocess.run([sys.executable, "-m", "fms_worker.cli", "serve", "--config", str(cfg), "--log-level", "error"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1  # the empty model cannot load ...
    assert sorted(p.name for p in cache.iterdir()) == ["inductor", "triton"]  # ... but the caches were set up first
