"""S3 or an S3-compatible store (MinIO, Ceph, R2...) as a store, through boto3.

Checksums, best first: a `SHA256SUMS` file under the prefix ("<sha256>  <path>"
lines, as `sha256sum` writes them); else the ETag, which is the MD5 of an
object uploaded in one part, or "<md5 of part md5s>-<n>" for a multipart upload
(part size read with HEAD ?partNumber=1). Objects encrypted with SSE-KMS have
ETags that are not MD5s: publish SHA256SUMS for those.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import boto3
import botocore.exceptions as bex
from botocore.config import Config

from fms_worker.fetch.download import Transient
from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.manifest import Checksum, Manifest, RemoteFile, select
from fms_worker.fetch.source import ModelSource

SUMS = "SHA256SUMS"
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "403", "401"}
_MISSING_CODES = {"NoSuchBucket", "NoSuchKey", "404"}


class S3Store:
    def __init__(self, source: ModelSource, endpoint: str | None, secret_name: str | None = None):
        self.source = source
        self.endpoint = endpoint or None
        self.secret = (f"Secret {secret_name!r}" if secret_name else
                       "the Secret that provides AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        # Retries are ours (resume from the part size); boto3's would restart a ranged GET from its start.
        self.client = boto3.client("s3", endpoint_url=self.endpoint,
                                   config=Config(retries={"max_attempts": 2, "mode": "standard"},
                                                 max_pool_connections=64, connect_timeout=30, read_timeout=60))

    def describe(self) -> str:
        return f"{self.source.uri}" + (f" at {self.endpoint}" if self.endpoint else "")

    @property
    def _prefix(self) -> str:
        return self.source.path + "/" if self.source.path else ""

    def _key(self, path: str) -> str:
        return self._prefix + path

    def list_files(self, include_pickles: bool) -> Manifest:
        prefix = self._prefix
        objects = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.source.location, Prefix=prefix):
                objects += [o for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        except (bex.ClientError, bex.BotoCoreError) as e:
            raise self._error(e, "listing") from e
        if not objects:
            raise FetchError(ExitCode.NOT_FOUND, f"model {self.describe()} not found: no objects under "
                             f"s3://{self.source.location}/{prefix}; check the bucket and prefix")
        sums = self._read_sums(prefix) if any(o["Key"] == prefix + SUMS for o in objects) else {}
        files = []
        for o in objects:
            rel = o["Key"][len(prefix):]
            if rel == SUMS:
                continue
            files.append(RemoteFile(rel, o["Size"], Checksum("sha256", sums[rel]) if rel in sums else None))
        manifest = select(files, None, include_pickles)
        return Manifest([f if f.checksum else self._etag_checksum(f, objects, prefix) for f in manifest.files],
                        None, manifest.skipped)

    def _read_sums(self, prefix: str) -> dict[str, str]:
        body = self.client.get_object(Bucket=self.source.location, Key=prefix + SUMS)["Body"].read().decode()
        sums = {}
        for line in body.splitlines():
            if line.strip():
                digest, _, name = line.strip().partition(" ")
                sums[name.strip().lstrip("*").removeprefix("./")] = digest.lower()
        return sums

    def _etag_checksum(self, f: RemoteFile, objects: list[dict], prefix: str) -> RemoteFile:
        etag = next(o["ETag"] for o in objects if o["Key"] == prefix + f.path).strip('"')
        if "-" not in etag:
            return RemoteFile(f.path, f.size, Checksum("md5", etag))
        try:
            head = self.client.head_object(Bucket=self.source.location, Key=self._key(f.path), PartNumber=1)
            return RemoteFile(f.path, f.size, Checksum("s3-multipart", etag, part_size=head["ContentLength"]))
        except (bex.ClientError, bex.BotoCoreError) as e:
            print(f"fms-fetch: cannot read the part size of {f.path} ({e}); checking its size only", file=sys.stderr)
            return RemoteFile(f.path, f.size, Checksum("none"))

    def read_range(self, path: str, start: int, end: int, size: int) -> Iterator[bytes]:
        try:
            r = self.client.get_object(Bucket=self.source.location, Key=self._key(path), Range=f"bytes={start}-{end - 1}")
            yield from r["Body"].iter_chunks(1 << 20)
        except (bex.ConnectionError, bex.ReadTimeoutError, bex.ResponseStreamingError, bex.IncompleteReadError) as e:
            raise Transient(f"{type(e).__name__}: {e}") from e
        except (bex.ClientError, bex.BotoCoreError) as e:
            raise self._error(e, f"downloading {path} of") from e

    def _error(self, e: Exception, doing: str) -> FetchError:
        if isinstance(e, bex.NoCredentialsError):
            return FetchError(ExitCode.CREDENTIALS, f"{doing} {self.describe()} needs credentials: set "
                              f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from {self.secret}")
        if isinstance(e, bex.EndpointConnectionError):
            return FetchError(ExitCode.UNAVAILABLE, f"cannot reach the S3 endpoint for {self.describe()}: {e}; "
                              "check the endpoint (AWS_ENDPOINT_URL) and the pod's network egress")
        if isinstance(e, bex.ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            if code in _AUTH_CODES:
                return FetchError(ExitCode.CREDENTIALS, f"{doing} {self.describe()} was refused ({status} {code}); "
                                  f"check the access keys in {self.secret} and that they may read the bucket")
            if code in _MISSING_CODES:
                return FetchError(ExitCode.NOT_FOUND, f"model {self.describe()} not found ({status} {code}); "
                                  "check the bucket and prefix")
            if isinstance(status, int) and status >= 500:
                return FetchError(ExitCode.UNAVAILABLE, f"{doing} {self.describe()} failed ({status} {code})")
        return FetchError(ExitCode.UNAVAILABLE, f"{doing} {self.describe()} failed: {type(e).__name__}: {e}")

    def close(self) -> None:
        self.client.close()
