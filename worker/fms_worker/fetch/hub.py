"""Hugging Face Hub (or a mirror) as a store: huggingface_hub lists the repo, httpx reads byte ranges.

The listing (`model_info` with blob metadata) resolves the revision to a commit
and gives every file's size and checksum (LFS sha256 or git blob sha1). Bytes
come from `<endpoint>/<repo>/resolve/<commit>/<file>` with a Range header, so
resume and parallel chunks are ours rather than the library's.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from fms_worker.fetch.download import Transient
from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.manifest import Checksum, Manifest, RemoteFile, select
from fms_worker.fetch.source import ModelSource

DEFAULT_ENDPOINT = "https://huggingface.co"


class HubStore:
    def __init__(self, source: ModelSource, endpoint: str | None, token: str | None, secret_name: str | None = None):
        self.source = source
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.token = token or None
        self.secret = f"Secret {secret_name!r}" if secret_name else "the Secret that provides HF_TOKEN"
        self.commit: str | None = None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # httpx drops Authorization on redirects to another host (the Hub's CDN), as it should.
        self.http = httpx.Client(headers=headers, follow_redirects=True,
                                 timeout=httpx.Timeout(30.0, read=60.0), limits=httpx.Limits(max_connections=64))

    def describe(self) -> str:
        return f"{self.source.uri} at {self.endpoint}"

    def list_files(self, include_pickles: bool) -> Manifest:
        api = HfApi(endpoint=self.endpoint, token=self.token or False)
        repo, rev = self.source.location, self.source.revision
        try:
            info = api.model_info(repo, revision=rev, files_metadata=True)
        except RevisionNotFoundError as e:
            raise FetchError(ExitCode.NOT_FOUND, f"revision {rev!r} of model hf://{repo} not found at {self.endpoint} "
                             f"({_status(e)}); use a branch, tag or commit that exists in the repository") from e
        except GatedRepoError as e:
            raise FetchError(ExitCode.CREDENTIALS, f"model hf://{repo} at {self.endpoint} is gated ({_status(e)}); "
                             f"accept its terms with the account whose token is in {self.secret}") from e
        except RepositoryNotFoundError as e:
            hint = ("check the org/name" if self.token else
                    f"check the org/name; if the model is private or gated, put a token in {self.secret}")
            raise FetchError(ExitCode.NOT_FOUND, f"model hf://{repo} not found at {self.endpoint} ({_status(e)}); {hint}") from e
        except HfHubHTTPError as e:
            raise self._http_error(e) from e
        except httpx.TransportError as e:
            raise FetchError(ExitCode.UNAVAILABLE, f"cannot reach {self.endpoint} to list hf://{repo}: {e}; "
                             "check the endpoint (HF_ENDPOINT) and the pod's network egress") from e
        self.commit = info.sha or rev or "main"
        files = [
            RemoteFile(s.rfilename, s.size or 0,
                       Checksum("sha256", s.lfs.sha256) if s.lfs else
                       Checksum("git-sha1", s.blob_id) if s.blob_id else Checksum("none"))
            for s in info.siblings or []
        ]
        return select(files, self.commit, include_pickles)

    def read_range(self, path: str, start: int, end: int, size: int) -> Iterator[bytes]:
        url = f"{self.endpoint}/{self.source.location}/resolve/{quote(self.commit or 'main', safe='')}/{quote(path)}"
        headers = {"Accept-Encoding": "identity"}
        partial = start > 0 or end < size
        if partial:
            headers["Range"] = f"bytes={start}-{end - 1}"
        try:
            with self.http.stream("GET", url, headers=headers) as r:
                if r.status_code in (401, 403):
                    raise FetchError(ExitCode.CREDENTIALS, f"downloading {path} of {self.describe()} was refused "
                                     f"({r.status_code}); check the token in {self.secret}")
                if r.status_code == 404:
                    raise FetchError(ExitCode.NOT_FOUND, f"{path} of {self.describe()} disappeared after listing (404)")
                if r.status_code >= 500 or r.status_code == 429:
                    raise Transient(f"{r.status_code} from {url}")
                if partial and r.status_code != 206:
                    raise FetchError(ExitCode.UNAVAILABLE, f"{self.endpoint} ignored the Range header for {path} "
                                     f"({r.status_code}); resumable downloads need a server that supports ranges")
                if r.status_code not in (200, 206):
                    raise FetchError(ExitCode.UNEXPECTED, f"unexpected {r.status_code} for {url}")
                yield from r.iter_raw()  # as received: bytes before a drop reach the disk and are not fetched again
        except httpx.TransportError as e:
            raise Transient(f"{type(e).__name__}: {e}") from e

    def _http_error(self, e: HfHubHTTPError) -> FetchError:
        status = e.response.status_code if e.response is not None else 0
        if status in (401, 403):
            return FetchError(ExitCode.CREDENTIALS, f"access to hf://{self.source.location} denied at {self.endpoint} "
                              f"({status}); the token in {self.secret} is invalid or lacks read access")
        return FetchError(ExitCode.UNAVAILABLE, f"listing hf://{self.source.location} at {self.endpoint} failed "
                          f"({status or type(e).__name__}): {str(e).splitlines()[0]}")

    def close(self) -> None:
        self.http.close()


def _status(e: HfHubHTTPError) -> int | str:
    return e.response.status_code if e.response is not None else "no response"
