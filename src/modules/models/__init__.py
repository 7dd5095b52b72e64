"""Model files: reading a GGUF's header, and downloading one that can be trusted."""

from modules.models.download import DownloadError, allowed, download
from modules.models.gguf import GGUFInfo, NotGGUFError, read_gguf_info

__all__ = [
    "DownloadError",
    "GGUFInfo",
    "NotGGUFError",
    "allowed",
    "download",
    "read_gguf_info",
]
