"""Record what the real agent CLIs print, for the dialect unit tests.

    python -m tests.agents.capture_fixtures [CLI...]

Runs each case's script against the scripted model server with the installed CLIs
(tests/agents/install-clis) and writes tests/agents/fixtures/<cli>/<case>.{stdout,stderr,json}.
Temporary paths in the output are replaced by /WORK so the fixtures stay stable.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.agents import clis
from tests.agents.server import HttpError, Reply, ScriptedModel, Step, WriteFile

FIXTURES = Path(__file__).parent / "fixtures"
OUTSIDE = "/var/tmp/gitexec-outside-the-worktree.txt"
RATE = "Rate limit reached for requests. Please try again in 7s."

CASES: dict[str, dict[str, Sequence[Step]]] = {
    "claude": {
        "success": [WriteFile("hello.txt", "hello\n"), Reply("Wrote hello.txt.")],
        "denied": [WriteFile(OUTSIDE, "x\n"), Reply("I could not write the file.")],
        "http429": [HttpError(429, RATE, retry_after_s=7, times=None)],
        "http529": [HttpError(529, "Overloaded", times=None)],
        "http500": [HttpError(500, "Internal server error", times=None)],
    },
    "codex": {
        "success": [WriteFile("hello.txt", "hello\n"), Reply("Wrote hello.txt.")],
        "blocked": [WriteFile(OUTSIDE, "x\n"), Reply("The sandbox blocked the write.")],
        "http429": [HttpError(429, RATE, retry_after_s=7, times=None)],
        "http529": [HttpError(529, "Overloaded", times=None)],
        "http400": [HttpError(400, "Invalid request: unknown parameter", times=None)],
    },
    "gemini": {
        "success": [WriteFile("hello.txt", "hello\n"), Reply("Wrote hello.txt.")],
        "denied": [WriteFile(OUTSIDE, "x\n"), Reply("I could not write the file.")],
        "http429": [HttpError(429, "Resource exhausted", retry_after_s=7, times=None)],
        "http529": [HttpError(529, "Overloaded", times=None)],
        "http400": [HttpError(400, "Invalid argument", times=None)],
    },
    "aider": {
        "success": [WriteFile("hello.txt", "hello\n")],
        "refused": [WriteFile(OUTSIDE, "x\n"), Reply("I could not write the file.")],
        "http401": [HttpError(401, "Incorrect API key provided", times=None)],
        "http429": [HttpError(429, RATE, retry_after_s=7, times=None)],
        "http529": [HttpError(529, "Overloaded", times=None)],
    },
}


def capture(cli: str, case: str, script: Sequence[Step]) -> None:
    with tempfile.TemporaryDirectory() as tmp, ScriptedModel(script) as server:
        root = Path(tmp)
        worktree = clis.make_worktree(root)
        run = clis.run_agent(clis.preset(cli), server, worktree, root / "home", timeout=400)

    def clean(data: bytes) -> bytes:
        return data.replace(str(root).encode(), b"/WORK").replace(server.url.encode(), b"URL")

    out = FIXTURES / cli
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{case}.stdout").write_bytes(clean(run.stdout))
    (out / f"{case}.stderr").write_bytes(clean(run.stderr))
    meta = {"exit_code": run.exit_code, "argv": [a if len(a) < 60 else "PROMPT" for a in run.argv]}
    (out / f"{case}.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"{cli}/{case}: exit {run.exit_code}, {len(run.stdout)} + {len(run.stderr)} bytes")


def main(argv: Sequence[str]) -> int:
    os.environ.setdefault("GIT_AUTHOR_NAME", "Fixture")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "fixture@example.com")
    os.environ.setdefault("GIT_COMMITTER_NAME", "Fixture")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "fixture@example.com")
    wanted = list(argv) or list(CASES)
    jobs = [(cli, case, script) for cli in wanted for case, script in CASES[cli].items()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(capture, *job) for job in jobs]:
            future.result()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
