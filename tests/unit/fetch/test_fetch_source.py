"""Source URI parser, cache directory names and file selection: pure, table-tested."""

from __future__ import annotations

import pytest

from fms_worker.fetch.errors import ExitCode, FetchError
from fms_worker.fetch.manifest import Checksum, RemoteFile, has_weights, is_wanted, select
from fms_worker.fetch.source import ModelSource, cache_dir_name, parse_source


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("hf://HuggingFaceTB/SmolLM2-135M-Instruct", ModelSource("hf://HuggingFaceTB/SmolLM2-135M-Instruct", "hf",
                                                                 "HuggingFaceTB/SmolLM2-135M-Instruct")),
        ("hf://meta-llama/Llama-3.1-8B@v1.0", ModelSource("hf://meta-llama/Llama-3.1-8B@v1.0", "hf",
                                                          "meta-llama/Llama-3.1-8B", revision="v1.0")),
        ("hf://org/name@0123abcd" * 1, ModelSource("hf://org/name@0123abcd", "hf", "org/name", revision="0123abcd")),
        ("hf://org/name@refs/pr/1", ModelSource("hf://org/name@refs/pr/1", "hf", "org/name", revision="refs/pr/1")),
        ("s3://models/llama/8b/", ModelSource("s3://models/llama/8b/", "s3", "models", path="llama/8b")),
        ("s3://my.bucket-1/a", ModelSource("s3://my.bucket-1/a", "s3", "my.bucket-1", path="a")),
        ("s3://bucket", ModelSource("s3://bucket", "s3", "bucket", path="")),
        ("pvc://weights/llama-8b", ModelSource("pvc://weights/llama-8b", "pvc", "weights", path="llama-8b")),
        ("pvc://weights", ModelSource("pvc://weights", "pvc", "weights", path="")),
        ("/opt/models/smollm2/", ModelSource("/opt/models/smollm2/", "path", "/opt/models/smollm2")),
        ("  hf://a/b  ", ModelSource("hf://a/b", "hf", "a/b")),
    ],
)
def test_parse_valid(uri, expected):
    assert parse_source(uri) == expected


@pytest.mark.parametrize(
    "uri, says",
    [
        ("huggingface.co/org/name", "no scheme"),
        ("hf://justname", "org/name"),
        ("hf://org/name/extra", "org/name"),
        ("hf://org/name@", "revision"),
        ("hf://org/name@bad rev", "revision"),
        ("s3://Bad_Bucket/x", "bucket name"),
        ("pvc://Claim/x", "PersistentVolumeClaim"),
        ("pvc://claim/../etc", "'..'"),
        ("/opt/../etc", "'..'"),
        ("gs://bucket/x", "unknown scheme 'gs'"),
        ("relative/path", "no scheme"),
    ],
)
def test_parse_invalid_says_what_to_fix(uri, says):
    with pytest.raises(FetchError) as e:
        parse_source(uri)
    assert e.value.code == ExitCode.BAD_SOURCE
    assert says in e.value.message and "hf://org/name[@revision]" in e.value.message


def test_cache_dir_name_is_readable_stable_and_distinct():
    a = cache_dir_name("hf://HuggingFaceTB/SmolLM2-135M-Instruct")
    assert a.startswith("HuggingFaceTB-SmolLM2-135M-Instruct-") and len(a.rsplit("-", 1)[1]) == 12
    assert cache_dir_name(" hf://HuggingFaceTB/SmolLM2-135M-Instruct ") == a
    names = {cache_dir_name(u) for u in ["hf://a/b", "hf://a/b@main", "hf://a/b@v2", "s3://a-b/b", "s3://aa/b"]}
    assert len(names) == 5
    assert "/" not in cache_dir_name("s3://bucket/deep/prefix/x") and len(cache_dir_name("s3://b/" + "x" * 300)) <= 61


@pytest.mark.parametrize(
    "path, default, with_pickles",
    [
        ("model-00001-of-00004.safetensors", True, True),
        ("config.json", True, True),
        ("tokenizer.json", True, True),
        ("tokenizer.model", True, True),
        ("vocab.txt", True, True),
        ("merges.txt", True, True),
        ("chat_template.jinja", True, True),
        ("1_Pooling/config.json", True, True),
        ("pytorch_model.bin", False, True),
        ("training_args.bin", False, True),
        ("consolidated.00.pth", False, True),
        ("model.pt", False, True),
        ("optimizer.pkl", False, True),
        ("README.md", False, False),
        (".gitattributes", False, False),
        ("onnx/model.onnx", False, False),
        ("model.gguf", False, False),
        ("flax_model.msgpack", False, False),
    ],
)
def test_is_wanted(path, default, with_pickles):
    assert is_wanted(path) is default
    assert is_wanted(path, include_pickles=True) is with_pickles


def test_select_keeps_needed_files_and_reports_skipped():
    none = Checksum("none")
    files = [RemoteFile(p, 1, none) for p in ["pytorch_model.bin", "config.json", "model.safetensors", "README.md"]]
    m = select(files, "abc")
    assert [f.path for f in m.files] == ["config.json", "model.safetensors"]
    assert m.skipped == ["pytorch_model.bin", "README.md"] and m.revision == "abc" and m.total_bytes == 2
    assert has_weights(m)
    assert not has_weights(select([RemoteFile("pytorch_model.bin", 1, none), RemoteFile("config.json", 1, none)]))
