"""One FoundationModelService object as the operator sees it: identity plus the validated spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import ValidationError

from fms_operator.api.models import GROUP, KIND, VERSION, FoundationModelServiceSpec


class InvalidSpec(ValueError):
    """The stored spec does not validate (e.g. written before a CRD upgrade)."""


@dataclass(frozen=True)
class FMS:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: FoundationModelServiceSpec

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "FMS":
        meta = body["metadata"]
        try:
            spec = FoundationModelServiceSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as e:
            fields = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise InvalidSpec(f"spec does not validate: {fields}") from e
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""),
                   generation=int(meta.get("generation") or 0), spec=spec)

    def owner_reference(self) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}
