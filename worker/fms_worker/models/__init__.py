"""Model definitions (pure nn.Modules) and the architecture registry."""

from fms_worker.models.registry import SUPPORTED_ARCHITECTURES, resolve_model_class

__all__ = ["SUPPORTED_ARCHITECTURES", "resolve_model_class"]
