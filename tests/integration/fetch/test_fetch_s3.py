"""Fetch the real SmolLM2 directory from a real S3-compatible server (moto's, started here)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from moto import settings as moto_settings
from moto.server import ThreadedMotoServer

from fms_worker.fetch.cache import MARKER
from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.fetcher import FetchOptions, fetch
from fms_worker.fetch.s3 import S3Store
from fms_worker.fetch.source import cache_dir_name, parse_source

BUCKET = "models"
URI = f"s3://{BUCKET}/smollm2/135m"
CHUNK = 64 << 20
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(smollm2_dir):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    # 16 MiB parts: model.safetensors becomes a multipart object (ETag "<md5>-<n>"), the rest single-part (MD5 ETag)
    multipart = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20)
    for p in smollm2_dir.iterdir():
        if p.is_file() and not p.name.startswith("."):
            client.upload_file(str(p), BUCKET, f"smollm2/135m/{p.name}", Config=multipart)
    client.put_object(Bucket=BUCKET, Key="smollm2/135m/pytorch_model.bin", Body=b"pickle")
    client.put_object(Bucket=BUCKET, Key="smollm2/135m/README.md", Body=b"card")
    weights, config = os.urandom(1 << 20), b'{"model_type": "llama"}'
    client.put_object(Bucket=BUCKET, Key="tiny/w.safetensors", Body=weights)
    client.put_object(Bucket=BUCKET, Key="tiny/config.json", Body=config)
    sums = f"{hashlib.sha256(weights).hexdigest()}  w.safetensors\n{'0' * 64}  config.json\n"
    client.put_object(Bucket=BUCKET, Key="tiny/SHA256SUMS", Body=sums.encode())
    client.close()
    yield endpoint
    server.stop()


@pytest.fixture()
def aws_env(monkeypatch):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


def _store(uri: str, endpoint: str) -> tuple[S3Store, list[tuple[str, str | None]]]:
    """A store whose GetObject calls are recorded: (key, Range)."""
    store = S3Store(parse_source(uri), endpoint, secret_name="s3-creds")
    seen: list[tuple[str, str | None]] = []
    store.client.meta.events.register(
        "before-call.s3.GetObject", lambda params, **kw: seen.append((params["url_path"], params["headers"].get("Range"))))
    return store, seen


def _opts(tmp_path: Path, endpoint: str) -> FetchOptions:
    return FetchOptions(cache_dir=tmp_path / "models", s3_endpoint=endpoint, chunk_size=CHUNK, workers=4, backoff_s=0.05)


def test_fetch_verifies_etags_resumes_a_partial_and_reuses_the_cache(aws_env, s3_endpoint, smollm2_dir, tmp_path):
    store, seen = _store(URI, s3_endpoint)
    kinds = {f.path: f.checksum.kind for f in store.list_files(False).files}
    assert kinds["model.safetensors"] == "s3-multipart" and kinds["config.json"] == "md5"
    assert "pytorch_model.bin" not in kinds and "README.md" not in kinds

    # a previous attempt died 1 MB into the first chunk of the weights
    d = tmp_path / "models" / cache_dir_name(URI)
    d.mkdir(parents=True)
    (d / "model.safetensors.partial.0").write_bytes((smollm2_dir / "model.safetensors").read_bytes()[:1_000_000])

    result = fetch(URI, _opts(tmp_path, s3_endpoint), store)
    assert not result.cached and result.path == str(d) and (d / MARKER).exists()
    for p in smollm2_dir.iterdir():
        if p.is_file() and not p.name.startswith("."):
            assert (d / p.name).stat().st_size == p.stat().st_size
    weights = [r for k, r in seen if k.endswith("/model.safetensors")]
    assert f"bytes=1000000-{CHUNK - 1}" in weights and f"bytes=0-{CHUNK - 1}" not in weights
    assert result.bytes_downloaded == result.bytes - 1_000_000

    store2, seen2 = _store(URI, s3_endpoint)
    again = fetch(URI, _opts(tmp_path, s3_endpoint), store2)
    assert again.cached and again.path == result.path and seen2 == []


def test_sha256sums_mismatch_is_detected(aws_env, s3_endpoint, tmp_path):
    uri = f"s3://{BUCKET}/tiny"
    store, _ = _store(uri, s3_endpoint)
    assert {f.path: f.checksum.kind for f in store.list_files(False).files} == {"config.json": "sha256",
                                                                                 "w.safetensors": "sha256"}
    with pytest.raises(FetchError) as e:
        fetch(uri, _opts(tmp_path, s3_endpoint), store)
    assert e.value.code == ExitCode.CHECKSUM and "config.json" in e.value.message
    d = tmp_path / "models" / cache_dir_name(uri)
    assert not (d / MARKER).exists() and not (d / "config.json").exists()


@pytest.mark.parametrize(
    "uri, code, says",
    [
        (f"s3://{BUCKET}/nothing/here", ExitCode.NOT_FOUND, f"no objects under s3://{BUCKET}/nothing/here/"),
        ("s3://no-such-bucket/x", ExitCode.NOT_FOUND, "not found (404 NoSuchBucket); check the bucket and prefix"),
    ],
)
def test_missing_model(aws_env, s3_endpoint, tmp_path, uri, code, says):
    with pytest.raises(FetchError) as e:
        fetch(uri, _opts(tmp_path, s3_endpoint))
    assert e.value.code == code and says in e.value.message and uri in e.value.message


def test_bad_credentials_name_the_secret(aws_env, s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # make moto check access keys
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    store, seen = _store(URI, s3_endpoint)
    with pytest.raises(FetchError) as e:
        fetch(URI, _opts(tmp_path, s3_endpoint), store)
    assert e.value.code == ExitCode.CREDENTIALS
    assert "was refused (403 InvalidAccessKeyId)" in e.value.message and "Secret 's3-creds'" in e.value.message
    assert seen == []
