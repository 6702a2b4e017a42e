"""Model source URIs: a pure parser and the cache directory name derived from a source.

    hf://org/name[@revision]   Hugging Face Hub (or a mirror: HF_ENDPOINT)
    s3://bucket/prefix         S3 or an S3-compatible store (AWS_ENDPOINT_URL)
    pvc://claim/path           a PersistentVolumeClaim the operator mounts read-only
    /abs/path                  a directory baked into the image
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from fms_worker.fetch.errors import ExitCode, FetchError

Scheme = Literal["hf", "s3", "pvc", "path"]

_HF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CLAIM = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class ModelSource:
    uri: str  # as written in the spec; the cache key is derived from it
    scheme: Scheme
    location: str  # hf: org/name; s3: bucket; pvc: claim; path: the directory
    path: str = ""  # s3: key prefix without slashes at the ends (may be empty); pvc: path inside the claim
    revision: str | None = None  # hf only

    @property
    def is_remote(self) -> bool:
        return self.scheme in ("hf", "s3")


def _bad(uri: str, why: str) -> FetchError:
    return FetchError(
        ExitCode.BAD_SOURCE,
        f"model source {uri!r} is not valid: {why}. "
        "Use hf://org/name[@revision], s3://bucket/prefix, pvc://claim/path or an absolute path in the image.",
    )


def parse_source(uri: str) -> ModelSource:
    uri = uri.strip()
    if uri.startswith("/"):
        if ".." in uri.split("/"):
            raise _bad(uri, "'..' is not allowed in a path")
        return ModelSource(uri, "path", uri.rstrip("/") or "/")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise _bad(uri, "no scheme")
    if scheme == "hf":
        name, at, revision = rest.partition("@")
        if not _HF_NAME.match(name):
            raise _bad(uri, f"{name!r} is not an org/name model id")
        if at and not _REVISION.match(revision):
            raise _bad(uri, f"revision {revision!r} is empty or has characters a branch, tag or commit cannot have")
        return ModelSource(uri, "hf", name, revision=revision or None)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.match(bucket):
            raise _bad(uri, f"{bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.', '-')")
        return ModelSource(uri, "s3", bucket, path=prefix.strip("/"))  # empty: the model is the whole bucket
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        if not _CLAIM.match(claim):
            raise _bad(uri, f"{claim!r} is not a valid PersistentVolumeClaim name")
        if ".." in path.split("/"):
            raise _bad(uri, "'..' is not allowed in a path")
        return ModelSource(uri, "pvc", claim, path=path.strip("/"))
    raise _bad(uri, f"unknown scheme {scheme!r}")


def cache_dir_name(uri: str) -> str:
    """Directory name of a source in the cache volume: readable prefix + hash of the URI as written.

    The operator computes the same name to point the worker at the model
    (tests/unit/fetch checks both agree), so keep this a plain function of the string.
    """
    uri = uri.strip()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", uri.split("://", 1)[-1]).strip("-.")[:48]
    return f"{slug}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"
