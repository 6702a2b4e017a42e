"""Model loading from a Hugging Face-style directory."""

from fms_worker.loader.weights import iter_safetensors, load_model, load_weights

__all__ = ["iter_safetensors", "load_model", "load_weights"]
