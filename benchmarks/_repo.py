"""Generate benchmark repositories quickly and reproducibly (git fast-import)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gitexec.gitutil import scrubbed_env

# Environment for git and gitexec subprocesses in benchmarks: a fixed identity, so runs
# work on machines without user.name configured. gitexec runs from bytecode as an installed
# package does (cached outside the source tree): a caller's PYTHONDONTWRITEBYTECODE would
# make every CLI call compile the whole package again, 0.4-0.8 s of each run.
BENCH_ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "gitexec-bench-pycache"),
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def gitexec(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI (`python -m gitexec`) in `repo`, as a user or CI would run it."""
    return subprocess.run(
        [sys.executable, "-m", "gitexec", *args],
        cwd=repo,
        env=BENCH_ENV,
        capture_output=True,
        text=True,
        check=False,
    )


def run_status(repo: Path, run_id: str) -> dict[str, Any]:
    """`git exec status --format json` of a run."""
    proc = gitexec(repo, "status", "--run", run_id, "--format", "json")
    if proc.returncode != 0:
        raise SystemExit(f"gitexec status failed:\n{proc.stderr}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


_WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu",
    "nu xi omicron pi rho sigma tau upsilon phi chi psi omega",
)

_VOCABULARY = " ".join(_WORDS).split()
FILES_PER_DIR = 25


def file_path(index: int, files: int) -> str:
    """Where file `index` of a `files`-file repository lives: src/pkgNN/modNN/fileNN.txt."""
    leaves = max(1, math.ceil(files / FILES_PER_DIR))
    fan = max(1, math.ceil(math.sqrt(leaves)))
    leaf, slot = divmod(index, FILES_PER_DIR)
    return f"src/pkg{leaf // fan:02d}/mod{leaf % fan:02d}/file{slot:02d}.txt"


def file_text(rnd: random.Random, lines: int) -> bytes:
    """Deterministic text with unique lines (so edits merge like real source)."""
    return "".join(
        f"{i:03d} {' '.join(rnd.choice(_VOCABULARY) for _ in range(6))}\n" for i in range(lines)
    ).encode()


def make_repo(path: Path, files: int, seed: int) -> None:
    """Create a repository at `path` with `files` files in nested directories on `main`.

    The tree is written in one `git fast-import` run and then checked out, so 20,000 files take
    a few seconds. Same `files` and `seed`, same commit.
    """
    rnd = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    env = scrubbed_env(
        {
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@example.com",
        }
    )
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    chunks: list[bytes] = []
    modifies: list[bytes] = []
    contents = [("README.md", b"# benchmark repository\n"), ("CHANGELOG.md", b"# Changes\n")]
    contents += [(file_path(i, files), file_text(rnd, rnd.randint(10, 40))) for i in range(files)]
    for mark, (name, data) in enumerate(contents, start=1):
        chunks.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
        modifies.append(b"M 100644 :%d %s\n" % (mark, name.encode()))
    message = b"benchmark repository\n"
    chunks.append(
        b"commit refs/heads/main\n"
        b"author bench <bench@example.com> 1700000000 +0000\n"
        b"committer bench <bench@example.com> 1700000000 +0000\n"
        b"data %d\n%s" % (len(message), message)
    )
    chunks.extend(modifies)
    chunks.append(b"\n")
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=path, input=b"".join(chunks), check=True, env=env
    )
    subprocess.run(["git", "reset", "-q", "--hard", "main"], cwd=path, check=True, env=env)
