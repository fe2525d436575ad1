"""Building gitexec projects in temporary repositories, and running gitexec on them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gitexec.cli import main
from tests.helpers import commit_all, git, init_repo, write_files

FAKE_AGENT = Path(__file__).parent / "bin" / "fake-agent"

FAKE_CONFIG = f"""\
version: 1
agents:
  fake:
    command: ["{FAKE_AGENT}", -p, "{{{{ prompt }}}}"]
"""


def ticket_yaml(tid: str, title: str | None = None, **fields: Any) -> str:
    """A ticket file; values are written as JSON, which is YAML."""
    lines = [f"id: {tid}", f"title: {json.dumps(title or f'Ticket {tid}')}"]
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, str) and "\n" in value:
            lines.append(f"{key}: |")
            lines.extend(f"  {line}" for line in value.splitlines())
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def make_project(
    path: Path,
    tickets: Mapping[str, str],
    *,
    config: str | None = None,
    files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """A repository on `main` with `files`, `.gitexec/config.yaml` and ticket files, committed."""
    init_repo(path, {"README.md": "project\n", **(files or {})})
    extra: dict[str, str | bytes] = {
        f".gitexec/tickets/{tid}.yaml": text for tid, text in tickets.items()
    }
    if config is not None:
        extra[".gitexec/config.yaml"] = config
    write_files(path, extra)
    commit_all(path, "tickets")
    return path


@contextlib.contextmanager
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def gitexec(repo: Path, *args: str) -> tuple[int, str, str]:
    """Run gitexec in-process; return (exit code, stdout, stderr)."""
    with captured() as (out, err):
        code = main(["-C", str(repo), *args])
    return code, out.getvalue(), err.getvalue()


def gitexec_subprocess(
    repo: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "gitexec", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def run_ok(repo: Path, *args: str) -> tuple[int, str, str]:
    code, out, err = gitexec(repo, "run", "--no-monitor", *args)
    return code, out, err


def status(repo: Path, run_id: str) -> dict[str, Any]:
    code, out, err = gitexec(repo, "status", "--run", run_id, "--format", "json")
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def show(repo: Path, rev_path: str) -> str:
    return git(repo, "show", rev_path)


def tree_without_engine_files(repo: Path, rev: str) -> dict[str, str]:
    """path -> blob id of a commit's files, leaving out .gitexec/ (status has timings)."""
    out = git(repo, "ls-tree", "-r", rev)
    files: dict[str, str] = {}
    for line in out.splitlines():
        meta, path = line.split("\t", 1)
        if not path.startswith(".gitexec/"):
            files[path] = meta.split()[2]
    return files


def first_parent_tickets(repo: Path, ref: str) -> list[str]:
    out = git(
        repo, "log", "--first-parent", "--format=%(trailers:key=Gitexec-Ticket,valueonly)", ref
    )
    return [line.strip() for line in out.splitlines() if line.strip()]


def crashed_run(path: Path, run_id: str = "dead") -> tuple[Path, int]:
    """A repository whose run was killed (SIGKILL) while its agent ran; (repo, agent pgid).

    The agent keeps running: kill its process group when done (resume does it too).
    """
    import sys

    from gitexec.journal import read_records
    from tests.helpers import wait_for

    repo = make_project(path, {"A": ticket_yaml("A", run="sleep 30")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", run_id],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = repo / ".git" / "gitexec" / "runs" / run_id / "journal.jsonl"
    wait_for(lambda: any(e["event"] == "agent-started" for e in read_records(journal)))
    proc.kill()
    proc.wait()
    pgid = next(e["pgid"] for e in read_records(journal) if e["event"] == "agent-started")
    return repo, int(pgid)
