"""What a remote model directory holds: files, sizes, checksums; and which of them the worker needs."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Literal

ChecksumKind = Literal["sha256", "git-sha1", "md5", "s3-multipart", "none"]

# The worker loads safetensors, configs and tokenizers; nothing else is worth the bytes.
WANTED = ("*.safetensors", "*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*")
# Pickles run code when loaded: never fetched unless asked for explicitly.
PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")


@dataclass(frozen=True)
class Checksum:
    kind: ChecksumKind
    value: str = ""
    part_size: int = 0  # s3-multipart: size of every part but the last


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the model directory, '/'-separated
    size: int
    checksum: Checksum


@dataclass(frozen=True)
class Manifest:
    files: list[RemoteFile]
    revision: str | None = None  # resolved commit (hf); None elsewhere
    skipped: list[str] = field(default_factory=list)  # listed but not wanted

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def is_wanted(path: str, include_pickles: bool = False) -> bool:
    name = path.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(name, p) for p in PICKLES):
        return include_pickles
    return any(fnmatch.fnmatch(name, p) for p in WANTED)


def select(files: list[RemoteFile], revision: str | None = None, include_pickles: bool = False) -> Manifest:
    keep = [f for f in files if is_wanted(f.path, include_pickles)]
    skipped = [f.path for f in files if not is_wanted(f.path, include_pickles)]
    return Manifest(sorted(keep, key=lambda f: f.path), revision, skipped)


def has_weights(manifest: Manifest) -> bool:
    return any(f.path.endswith((".safetensors",) + tuple(p[1:] for p in PICKLES)) for f in manifest.files)
