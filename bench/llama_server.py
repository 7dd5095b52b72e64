"""llama.cpp's own `llama-server`, the baseline of the generation benchmark: the same
llama.cpp that llama-cpp-python vendors, built once from that package's source
distribution (PyPI, same version as installed) into bench/.cache/, then reused.

    .venv/bin/python bench/llama_server.py      # build it (or find it) and print its path

LLAMA_SERVER=/path/to/llama-server uses another build instead (the report says which)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_or_build() -> tuple[Path, str]:
    """The llama-server binary and how it was obtained (for the report)."""
    given = os.environ.get("LLAMA_SERVER")
    if given:
        return Path(given), f"LLAMA_SERVER={given}"
    package = version("llama_cpp_python")
    binary = CACHE / f"llama-server-{package}" / "bin" / "llama-server"
    if binary.is_file():
        return binary, f"built earlier from llama-cpp-python {package}'s sdist ({binary})"
    build(package, binary.parent.parent)
    return binary, f"built now from llama-cpp-python {package}'s sdist ({binary})"


def build(package: str, prefix: Path) -> None:
    if shutil.which("cmake") is None:
        raise SystemExit("cmake is needed to build llama-server (apt-get install cmake)")
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        work = Path(tmp)
        log(f"downloading llama-cpp-python {package}'s sdist")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"llama-cpp-python=={package}", "-d", str(work)],
            check=True,
        )  # fmt: skip
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        log(f"building llama-server from {source.relative_to(work)} (several minutes)")
        options = [
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_CURL=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
        ]
        configure = ["cmake", "-S", str(source), "-B", str(work / "build"), *options]
        subprocess.run(configure, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(
            ["cmake", "--build", str(work / "build"), "--target", "llama-server", "-j", jobs],
            check=True,
        )
        (prefix / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "build" / "bin" / "llama-server", prefix / "bin" / "llama-server")


if __name__ == "__main__":
    path, how = find_or_build()
    log(how)
    print(path)
