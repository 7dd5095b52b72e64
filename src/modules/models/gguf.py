"""What a GGUF file says about itself, read from its header without loading the model.

An admin adds a model by pointing at a file or a download; before the service offers it we
want to know that it is a GGUF at all (not an HTML error page saved under a .gguf name, not a
half-finished download) and what it is: its architecture, its name, its training context
length and its chat template. llama.cpp would tell us too, but only after mapping the whole
file and building a vocabulary; this reader touches the header only, skipping the large
arrays in it (a tokenizer's 50k strings) by seeking over them.

The format (little-endian): magic `GGUF`, version u32 (2 or 3), tensor count u64, key/value
count u64, then the key/value pairs: key (u64 length, UTF-8 bytes), value type u32, value.
Every length and count comes from the file, so each is bounded before it is trusted: a
hostile or broken file is a `NotGGUFError`, never a huge allocation or a long loop.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_KEY_BYTES = 64 * 1024
MAX_STRING_BYTES = 16 * 1024 * 1024
MAX_KV_COUNT = 100_000
# Arrays hold arrays only in theory; a few levels is already more than any real file.
MAX_ARRAY_DEPTH = 4
# A tensor's description takes at least 24 bytes (name length, dimensions, type, offset).
MIN_TENSOR_INFO_BYTES = 24

TYPE_UINT8, TYPE_INT8, TYPE_UINT16, TYPE_INT16 = 0, 1, 2, 3
TYPE_UINT32, TYPE_INT32, TYPE_FLOAT32, TYPE_BOOL = 4, 5, 6, 7
TYPE_STRING, TYPE_ARRAY, TYPE_UINT64, TYPE_INT64, TYPE_FLOAT64 = 8, 9, 10, 11, 12

# The fixed-size value types: their struct format (all little-endian).
SCALAR_FORMATS: dict[int, struct.Struct] = {
    TYPE_UINT8: struct.Struct("<B"),
    TYPE_INT8: struct.Struct("<b"),
    TYPE_UINT16: struct.Struct("<H"),
    TYPE_INT16: struct.Struct("<h"),
    TYPE_UINT32: struct.Struct("<I"),
    TYPE_INT32: struct.Struct("<i"),
    TYPE_FLOAT32: struct.Struct("<f"),
    TYPE_BOOL: struct.Struct("<?"),
    TYPE_UINT64: struct.Struct("<Q"),
    TYPE_INT64: struct.Struct("<q"),
    TYPE_FLOAT64: struct.Struct("<d"),
}
INTEGER_TYPES = frozenset(
    (
        TYPE_UINT8,
        TYPE_INT8,
        TYPE_UINT16,
        TYPE_INT16,
        TYPE_UINT32,
        TYPE_INT32,
        TYPE_UINT64,
        TYPE_INT64,
    )
)
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
# The keys kept as strings; `<architecture>.context_length` is kept as an integer.
STRING_KEYS = frozenset(("general.architecture", "general.name", "tokenizer.chat_template"))
CONTEXT_LENGTH_SUFFIX = ".context_length"


class NotGGUFError(ValueError):
    """The file is not a GGUF this reader can trust: the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """A GGUF file's identity, from its header; None where the header does not say."""

    version: int
    architecture: str | None
    name: str | None
    context_length: int | None
    chat_template: str | None
    tensor_count: int
    size_bytes: int


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read `path`'s GGUF header: its metadata, without the tensors. Raises NotGGUFError."""
    with path.open("rb") as file:
        reader = _HeaderReader(file, os.fstat(file.fileno()).st_size)
        version, tensor_count, kv_count = reader.preamble()
        strings: dict[str, str] = {}
        context_lengths: dict[str, int] = {}
        for _ in range(kv_count):
            key = reader.string(MAX_KEY_BYTES, "key")
            value_type = reader.u32()
            if key in STRING_KEYS and value_type == TYPE_STRING:
                strings[key] = reader.string(MAX_STRING_BYTES, key)
            elif key.endswith(CONTEXT_LENGTH_SUFFIX) and value_type in INTEGER_TYPES:
                context_lengths[key.removesuffix(CONTEXT_LENGTH_SUFFIX)] = reader.scalar(value_type)
            else:
                reader.skip_value(value_type, key)
    architecture = strings.get("general.architecture")
    return GGUFInfo(
        version=version,
        architecture=architecture,
        name=strings.get("general.name"),
        context_length=context_lengths.get(architecture) if architecture else None,
        chat_template=strings.get("tokenizer.chat_template"),
        tensor_count=tensor_count,
        size_bytes=reader.size,
    )


class _HeaderReader:
    """Bounded reads from a buffered file: every read and skip stays inside the file."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file = file
        self.size = size

    def preamble(self) -> tuple[int, int, int]:
        """Magic, version, tensor count and key/value count, each checked."""
        magic = self.file.read(4)
        if magic != MAGIC:
            if len(magic) < 4:
                raise NotGGUFError(f"not a GGUF file: it is only {self.size} bytes long")
            raise NotGGUFError(f"not a GGUF file: it starts with {magic!r}, not {MAGIC!r}")
        version = self.u32()
        if version not in SUPPORTED_VERSIONS:
            # Versions 2 and 3 written big-endian read as 2 << 24 and 3 << 24.
            if version in (2 << 24, 3 << 24):
                raise NotGGUFError("a big-endian GGUF file: only little-endian is supported")
            raise NotGGUFError(
                f"unsupported GGUF version {version} (versions 2 and 3 are read); "
                "convert the model again with a recent llama.cpp"
            )
        tensor_count, kv_count = self.u64(), self.u64()
        if tensor_count > self.size // MIN_TENSOR_INFO_BYTES:
            raise NotGGUFError(
                f"a truncated GGUF file, or not a GGUF: it claims {tensor_count} tensors, "
                f"more than its {self.size} bytes can describe"
            )
        if kv_count > MAX_KV_COUNT:
            raise NotGGUFError(
                f"not a GGUF file: it claims {kv_count} metadata entries (at most "
                f"{MAX_KV_COUNT} are read)"
            )
        return version, tensor_count, kv_count

    def read(self, count: int) -> bytes:
        data = self.file.read(count)
        if len(data) != count:
            raise self._truncated()
        return data

    def skip(self, count: int) -> None:
        if self.file.tell() + count > self.size:
            raise self._truncated()
        self.file.seek(count, os.SEEK_CUR)

    def u32(self) -> int:
        value: int = U32.unpack(self.read(4))[0]
        return value

    def u64(self) -> int:
        value: int = U64.unpack(self.read(8))[0]
        return value

    def scalar(self, value_type: int) -> int:
        form = SCALAR_FORMATS[value_type]
        value: int = form.unpack(self.read(form.size))[0]
        return value

    def string(self, limit: int, what: str) -> str:
        length = self.u64()
        if length > limit:
            raise NotGGUFError(f"not a GGUF file: a {length}-byte string in {what!r}")
        try:
            return self.read(length).decode("utf-8")
        except UnicodeDecodeError:
            raise NotGGUFError(f"not a GGUF file: {what!r} is not UTF-8") from None

    def skip_value(self, value_type: int, key: str, depth: int = 0) -> None:
        """Move past one value without keeping it; arrays are skipped, never built."""
        if value_type in SCALAR_FORMATS:
            self.skip(SCALAR_FORMATS[value_type].size)
        elif value_type == TYPE_STRING:
            self._skip_strings(1, key)
        elif value_type == TYPE_ARRAY and depth < MAX_ARRAY_DEPTH:
            self._skip_array(key, depth)
        else:
            raise NotGGUFError(f"not a GGUF file: value type {value_type} in {key!r}")

    def _skip_array(self, key: str, depth: int) -> None:
        element_type, count = self.u32(), self.u64()
        if element_type in SCALAR_FORMATS:
            # One seek over the whole array (skip checks it against the file's size).
            self.skip(count * SCALAR_FORMATS[element_type].size)
        elif element_type == TYPE_STRING:
            self._skip_strings(count, key)
        else:
            # Each element, an array itself or unknown, takes at least 4 bytes.
            if count * 4 > self.size:
                raise self._truncated()
            for _ in range(count):
                self.skip_value(element_type, key, depth + 1)

    def _skip_strings(self, count: int, key: str) -> None:
        # Each string is at least its 8-byte length: an absurd count fails before any loop.
        if count * 8 > self.size - self.file.tell():
            raise self._truncated()
        read, unpack, seek = self.file.read, U64.unpack, self.file.seek
        for _ in range(count):
            raw = read(8)
            if len(raw) != 8:
                raise self._truncated()
            length = unpack(raw)[0]
            if length > MAX_STRING_BYTES:
                raise NotGGUFError(f"not a GGUF file: a {length}-byte string in {key!r}")
            seek(length, os.SEEK_CUR)
        # Seeks past the end are allowed by the OS; one check at the end catches them.
        if self.file.tell() > self.size:
            raise self._truncated()

    def _truncated(self) -> NotGGUFError:
        return NotGGUFError(
            f"a truncated GGUF file: its header goes past its end ({self.size} bytes); "
            "an unfinished download? Fetch it again"
        )
