"""Which model class serves which Hugging Face architecture."""

from __future__ import annotations

from fms_worker.models.llama import LlamaForCausalLM

_CLASSES = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
}
SUPPORTED_ARCHITECTURES = tuple(_CLASSES)
# Checkpoints converted without `architectures` (e.g. from GGUF) still name their model_type.
_BY_MODEL_TYPE = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM"}


def architecture_of(hf_config) -> str:
    names = list(getattr(hf_config, "architectures", None) or [])
    if not names and getattr(hf_config, "model_type", None) in _BY_MODEL_TYPE:
        names = [_BY_MODEL_TYPE[hf_config.model_type]]
    for name in names:
        if name in _CLASSES:
            return name
    shown = ", ".join(names) or f"model_type {getattr(hf_config, 'model_type', None)!r}"
    raise ValueError(f"architecture {shown} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")


def resolve_model_class(hf_config):
    return _CLASSES[architecture_of(hf_config)]
