"""GGUF header reading: the bundled model's metadata, crafted headers, and files that are not
GGUFs (an HTML page, a truncated download, absurd counts) refused with a reason."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from modules.models import GGUFInfo, NotGGUFError, read_gguf_info

STRING, ARRAY, UINT32, UINT64, FLOAT32, BOOL = 8, 9, 4, 10, 6, 7


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def kv(key: str, value_type: int, value: bytes) -> bytes:
    return string(key) + struct.pack("<I", value_type) + value


def string_array(items: list[str]) -> bytes:
    return struct.pack("<IQ", STRING, len(items)) + b"".join(string(item) for item in items)


def header(*kvs: bytes, version: int = 3, tensors: int = 0, kv_count: int | None = None) -> bytes:
    count = len(kvs) if kv_count is None else kv_count
    return b"GGUF" + struct.pack("<IQQ", version, tensors, count) + b"".join(kvs)


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    return path


def test_the_bundled_models_header(model_path: Path) -> None:
    info = read_gguf_info(model_path)
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert info.context_length == 8192
    assert info.chat_template is not None
    assert "{% for message in messages %}" in info.chat_template
    assert info.tensor_count > 0
    assert info.size_bytes == model_path.stat().st_size


def test_a_crafted_header_with_arrays_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        header(
            kv("general.architecture", STRING, string("qwen2")),
            kv("tokenizer.ggml.tokens", ARRAY, string_array(["<s>", "</s>", "héllo", ""] * 50)),
            kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", FLOAT32, 3) + bytes(12)),
            kv("llama.context_length", UINT32, struct.pack("<I", 2048)),  # not its architecture
            kv("qwen2.context_length", UINT64, struct.pack("<Q", 32768)),
            kv("general.name", STRING, string("Tiny")),
            kv("tokenizer.ggml.add_bos_token", BOOL, b"\x01"),
            kv("tokenizer.chat_template", STRING, string("{{ messages }}")),
        ),
    )
    assert read_gguf_info(path) == GGUFInfo(
        version=3,
        architecture="qwen2",
        name="Tiny",
        context_length=32768,
        chat_template="{{ messages }}",
        tensor_count=0,
        size_bytes=path.stat().st_size,
    )


def test_a_header_without_the_known_keys(tmp_path: Path) -> None:
    info = read_gguf_info(write(tmp_path, header(version=2)))
    assert (info.version, info.architecture, info.name) == (2, None, None)
    assert (info.context_length, info.chat_template) == (None, None)


def test_an_html_page_is_not_a_gguf(tmp_path: Path) -> None:
    path = write(tmp_path, b"<!DOCTYPE html><html><body>Not found</body></html>")
    with pytest.raises(NotGGUFError, match=r"not a GGUF file: it starts with b'<!DO'"):
        read_gguf_info(path)


@pytest.mark.parametrize("data", [b"", b"GG"])
def test_a_file_too_short_for_a_magic(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(NotGGUFError, match="only"):
        read_gguf_info(write(tmp_path, data))


def test_a_truncated_download(tmp_path: Path, model_path: Path) -> None:
    with model_path.open("rb") as model:
        path = write(tmp_path, model.read(1000))
    with pytest.raises(NotGGUFError, match="truncated"):
        read_gguf_info(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (header(kv_count=10**12), "metadata entries"),
        (header(tensors=2**63), "tensors"),
        (header(version=1), "unsupported GGUF version 1"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
        (header(string("k" * 70_000)), "string in 'key'"),
        (header(kv("a", STRING, struct.pack("<Q", 17 << 20))), "string"),
        (header(kv("a", ARRAY, struct.pack("<IQ", STRING, 2**62))), "truncated"),
        (header(kv("a", ARRAY, struct.pack("<IQ", UINT64, 2**60))), "truncated"),
        (header(kv("a", ARRAY, struct.pack("<IQ", ARRAY, 2**60))), "truncated"),
        (header(kv("a", 99, b"")), "value type 99"),
        (header(kv("a", STRING, string("x")), kv_count=2), "truncated"),
        (header(kv("general.name", STRING, struct.pack("<Q", 2) + b"\xff\xfe")), "not UTF-8"),
    ],
)
def test_broken_headers_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(NotGGUFError, match=message):
        read_gguf_info(write(tmp_path, data))
