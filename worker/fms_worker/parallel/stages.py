"""Pipeline stages: which decoder layers each stage owns (pure)."""

from __future__ import annotations


def stage_layers(num_layers: int, pp: int, stage: int) -> tuple[int, int]:
    """[first, last) of `stage`; when the layers do not split evenly the first stages take one more."""
    if not 0 <= stage < pp or pp > num_layers:
        raise ValueError(f"cannot split {num_layers} layers into {pp} stages (stage {stage})")
    base, extra = divmod(num_layers, pp)
    first = stage * base + min(stage, extra)
    return first, first + base + (1 if stage < extra else 0)
