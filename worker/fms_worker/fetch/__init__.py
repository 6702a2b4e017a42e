"""Model sources and the weight cache: fetch hf://, s3://, pvc:// or image paths into a verified local directory."""

from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.fetcher import FetchOptions, FetchResult, fetch
from fms_worker.fetch.source import ModelSource, cache_dir_name, parse_source

__all__ = ["ExitCode", "FetchError", "FetchOptions", "FetchResult", "ModelSource", "cache_dir_name", "fetch", "parse_source"]
