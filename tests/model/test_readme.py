"""The README's walkthrough, run as a newcomer pastes it: every shell and Python block from
"Using it" to "First admin", in order, in one shell, against a fresh `llm-service serve`.
curl is made to fail on an HTTP error, so a block that breaks breaks the test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import cli_server

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def walkthrough() -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index("\n## Using it\n")
    end = text.index("\n### First admin\n")
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text[start:end])]


def script(blocks: list[tuple[str, str]], base_url: str) -> str:
    lines = ["set -euo pipefail"]
    for number, (language, body) in enumerate(blocks, start=1):
        body = body.replace("http://127.0.0.1:8000", base_url)
        lines.append(f"echo; echo '=== block {number} ({language})'")
        if language == "sh":
            # As pasted, but an HTTP error status is a failure.
            lines.append(re.sub(r"\bcurl -s(N?) ", r"curl -sS\1 --fail-with-body ", body))
        else:
            lines += [f"{sys.executable} - <<'PY'", body.rstrip(), "PY"]
    return "\n".join(lines) + "\n"


def test_the_readme_walkthrough_runs_top_to_bottom(tmp_path: Path) -> None:
    blocks = walkthrough()
    assert [language for language, _ in blocks].count("python") >= 2
    assert len(blocks) >= 6
    env = {"DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": "", "LLM_CONTEXT_SIZE": "2048"}
    with cli_server(env) as base_url:
        result = subprocess.run(
            ["bash", "-c", script(blocks, base_url)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    outputs = result.stdout.split("=== block ")[1:]
    assert len(outputs) == len(blocks)
    assert '"response"' in outputs[0]
    assert "event: done" in outputs[1]
    assert "llms_" not in outputs[-1]  # the key was revoked, and no secret is echoed there
