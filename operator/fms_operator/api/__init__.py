"""Typed API of the FoundationModelService resource; the CRD YAML is generated from it."""

from fms_operator.api.models import GROUP, KIND, PLURAL, SHORT_NAME, VERSION, FoundationModelServiceSpec, FoundationModelServiceStatus

__all__ = ["GROUP", "KIND", "PLURAL", "SHORT_NAME", "VERSION", "FoundationModelServiceSpec", "FoundationModelServiceStatus"]
