"""Fetch failures: one exception type whose exit code tells the operator what kind of fix is needed.

The fetch runs as an init container. Kubernetes shows the text written to the
termination log as the container's `terminated.message`; the operator copies
it into the `ModelReady` condition, so every message names the source, what
went wrong, and what to change.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1  # a bug or an error we did not classify; the message has the traceback's last line
    BAD_SOURCE = 2  # the source URI or a flag is malformed: fix the spec
    NOT_FOUND = 3  # model, revision, bucket, prefix or path does not exist: fix the name or revision
    CREDENTIALS = 4  # 401/403: fix the Secret (token or access keys) or grant access
    CHECKSUM = 5  # a downloaded file does not match the store's checksum: the store or the network corrupts data
    DISK_FULL = 6  # the cache volume is too small: grow it or free space
    UNAVAILABLE = 7  # network or server error after retries: usually transient, the pod restarts the fetch
    NO_WEIGHTS = 8  # the source has no usable files (e.g. only pickles): convert to safetensors


class FetchError(Exception):
    """A failure with a message for humans and an exit code for the operator."""

    def __init__(self, code: ExitCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"
