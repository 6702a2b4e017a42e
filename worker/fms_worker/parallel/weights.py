"""Zero-copy safetensors reading: each rank copies only the slice its weight_loader narrows to.

A safetensors file is an 8-byte header length, a JSON header and raw tensor
bytes. Mapping the file and viewing each tensor with `torch.frombuffer` costs
no reads; the layers' weight loaders then `narrow` to this rank's rows or
columns and copy only those pages. The map is private copy-on-write, so the
view is writable for torch and the file is never modified.
"""

from __future__ import annotations

import json
import mmap
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from fms_worker.loader.weights import safetensors_files

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_LAYER = re.compile(r"^(.*\.layers\.)(\d+)(\..*)$")


def iter_mapped(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    base = 8 + header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{path.name}: tensor {name!r} has dtype {entry['dtype']}, which this loader cannot read")
        begin, end = entry["data_offsets"]
        numel = (end - begin) // torch.tensor([], dtype=dtype).element_size()
        flat = torch.frombuffer(mapped, dtype=dtype, count=numel, offset=base + begin) if numel else torch.empty(0, dtype=dtype)
        yield name, flat.view(entry["shape"])


def iter_model_dir(model_dir: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    for path in safetensors_files(model_dir):
        yield from iter_mapped(path)


def stage_weights(weights: Iterator[tuple[str, torch.Tensor]], first: int, last: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Keep decoder layers [first, last) renumbered from 0; everything else (embeddings, norm, head) passes."""
    for name, tensor in weights:
        m = _LAYER.match(name)
        if m is None:
            yield name, tensor
        elif first <= int(m.group(2)) < last:
            yield f"{m.group(1)}{int(m.group(2)) - first}{m.group(3)}", tensor
