"""The inference nodes' init container (inference.model.source=download): fetch the model
onto the node's own volume, once, with the service's own downloader (only URLs under
MODEL_DOWNLOAD_PREFIXES, redirects included; a cut connection resumes; MODEL_SHA256 checked
when given; the file is renamed into place only when whole), then check its GGUF header.
A file already in place is kept."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from modules.config import Settings
from modules.models.download import DownloadError, download, shown_url
from modules.models.gguf import NotGGUFError, read_gguf_info


def main() -> int:
    settings = Settings()
    target = Path(settings.models_dir) / os.environ["MODEL_FILE"]
    if target.is_file():
        print(f"{target.name} is in place", flush=True)
        return 0
    url = os.environ["MODEL_URL"]
    prefixes = [p.strip() for p in settings.model_download_prefixes.split(",") if p.strip()]
    shown = [-1]

    def progress(done: int, total: int | None) -> None:
        if total and done * 10 // total > shown[0]:  # every tenth of the file
            shown[0] = done * 10 // total
            print(f"{target.name}: {done >> 20} of {total >> 20} MiB", flush=True)

    print(f"downloading {shown_url(url)} to {target}", flush=True)
    try:
        asyncio.run(
            download(
                url,
                target,
                sha256=os.environ.get("MODEL_SHA256") or None,
                prefixes=prefixes,
                on_progress=progress,
            )
        )
        info = read_gguf_info(target)
    except NotGGUFError as exc:
        target.unlink(missing_ok=True)
        print(f"fetch-model: {target.name} is not a GGUF file: {exc}", file=sys.stderr)
        return 1
    except DownloadError as exc:
        print(f"fetch-model: {exc}", file=sys.stderr)
        return 1
    print(f"{target.name}: {info.architecture} model, {info.size_bytes >> 20} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
