"""Load an encoder directory (config.json, *.safetensors, tokenizer, sentence-transformers files) into a LoadedEncoder."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from safetensors.torch import load_file
from torch import nn

from fms_worker.encoders.bert import BertArgs, BertModel
from fms_worker.encoders.image_processor import ImageProcessor
from fms_worker.encoders.layers import linear_factory
from fms_worker.encoders.pooling import POOLING_MODES
from fms_worker.encoders.vit import ViTArgs, ViTForImageClassification

EncoderKind = Literal["embed", "classify_text", "classify_image"]

_ST_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                    "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}
# Checkpoint tensors no serving path reads; whole sub-modules the model lacks (a pre-training `cls.` head, the
# pooler under an embedding model) are skipped as well.
_IGNORED = re.compile(r"^(vit\.pooler\.|embeddings\.position_ids$)")


class EncoderLoadError(ValueError):
    pass


@dataclass
class LoadedEncoder:
    kind: EncoderKind
    model: nn.Module
    max_len: int                      # longest token sequence accepted (images: 0)
    tokenizer: object | None = None   # a transformers fast tokenizer for text models
    image_processor: ImageProcessor | None = None
    pooling: str = "cls"
    normalize: bool = False
    dimension: int = 0                # embedding width
    matryoshka_dims: tuple[int, ...] | None = None  # None: `dimensions` refused; () any width up to `dimension`
    id2label: dict[int, str] = field(default_factory=dict)
    multi_label: bool = False
    vocab_size: int = 0
    pad_token_id: int = 0


def load_encoder(path: str | Path, task: str, *, quantization: str = "none", max_model_len: int | None = None) -> LoadedEncoder:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise EncoderLoadError(f"{cfg_file} is missing; model.path must be a Hugging Face model directory")
    cfg = json.loads(cfg_file.read_text())
    model_type = cfg.get("model_type")
    linear = linear_factory(quantization)
    if model_type == "vit":
        if task != "classify":
            raise EncoderLoadError(f"a ViT model serves task 'classify', not {task!r}; set model.task: classify")
        args = ViTArgs.from_hf(cfg)
        model = _load_weights(ViTForImageClassification(args, linear), path)
        return LoadedEncoder(kind="classify_image", model=model, max_len=0,
                             image_processor=ImageProcessor.from_dir(path, args.image_size), id2label=args.id2label,
                             multi_label=cfg.get("problem_type") == "multi_label_classification")
    if model_type != "bert":
        raise EncoderLoadError(f"model_type {model_type!r} is not supported for task {task!r}; "
                               "supported: bert (embed, classify), vit (classify)")
    with_classifier = task == "classify"
    if with_classifier and not any(a.endswith("ForSequenceClassification") for a in cfg.get("architectures") or []):
        raise EncoderLoadError("task 'classify' needs a *ForSequenceClassification checkpoint (config.json "
                               f"architectures is {cfg.get('architectures')}); use task 'embed' for a plain encoder")
    args = BertArgs.from_hf(cfg, with_classifier)
    model = _load_weights(BertModel(args, linear), path)
    st = _sentence_transformers(path)
    limits = [args.max_position_embeddings, st.get("max_seq_length"), max_model_len]
    enc = LoadedEncoder(kind="embed" if task == "embed" else "classify_text", model=model,
                        max_len=min(x for x in limits if x), tokenizer=_tokenizer(path),
                        pooling=st.get("pooling", "cls"), normalize=st.get("normalize", False),
                        dimension=args.hidden_size, matryoshka_dims=_matryoshka(path, cfg),
                        id2label=args.id2label, multi_label=cfg.get("problem_type") == "multi_label_classification",
                        vocab_size=args.vocab_size, pad_token_id=args.pad_token_id)
    return enc


def _load_weights(model: nn.Module, path: Path) -> nn.Module:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise EncoderLoadError(f"no *.safetensors file in {path}; convert the checkpoint to safetensors")
    state: dict = {}
    for f in files:
        state.update(load_file(f))
    own = {k.split(".", 1)[0] for k in model.state_dict()}
    renamed = {}
    for key, tensor in state.items():
        # A BertForX checkpoint nests the encoder under "bert."; a plain BertModel does not.
        head, _, rest = key.partition(".")
        if head == "bert" and "bert" not in own:
            key = rest
        if not _IGNORED.match(key) and key.split(".", 1)[0] in own:
            renamed[key] = tensor
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise EncoderLoadError(f"checkpoint in {path} does not fit the model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
    return model.eval()


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if not tok.is_fast:
        raise EncoderLoadError(f"{path} has no fast tokenizer (tokenizer.json); one is required")
    return tok


def _sentence_transformers(path: Path) -> dict:
    """Pooling mode, normalisation and max_seq_length from the sentence-transformers files, when present."""
    out: dict = {}
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return out
    for m in json.loads(modules_file.read_text()):
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Pooling":
            pcfg = json.loads((path / m["path"] / "config.json").read_text())
            modes = [mode for key, mode in _ST_POOLING_KEYS.items() if pcfg.get(key)]
            if len(modes) != 1:
                raise EncoderLoadError(f"{m['path']}/config.json enables pooling {modes}; exactly one of "
                                       f"{', '.join(POOLING_MODES)} is supported")
            out["pooling"] = modes[0]
        elif kind == "Normalize":
            out["normalize"] = True
        elif kind != "Transformer":
            raise EncoderLoadError(f"sentence-transformers module {m['type']} is not supported "
                                   "(supported: Transformer, Pooling, Normalize)")
    sbert = path / "sentence_bert_config.json"
    if sbert.exists():
        out["max_seq_length"] = json.loads(sbert.read_text()).get("max_seq_length")
    return out


def _matryoshka(path: Path, cfg: dict) -> tuple[int, ...] | None:
    """Widths the model was trained to be cut to: config.json `matryoshka_dimensions`, or any width when the
    model card is tagged `matryoshka` (MatryoshkaLoss). None means `dimensions` must equal the full width."""
    if cfg.get("matryoshka_dimensions"):
        return tuple(int(d) for d in cfg["matryoshka_dimensions"])
    readme = path / "README.md"
    if readme.exists():
        text = readme.read_text(errors="replace")
        if text.startswith("---") and re.search(r"^\s*-\s*matryoshka\s*$", text.split("---", 2)[1], re.M | re.I):
            return ()
    return None
