"""Deterministic ticket sets for the benchmarks: a layered DAG with a few long chains.

`generate(n, seed)` builds `gitexec.tickets.Ticket` values in memory (for `make_plan`);
`write_tickets(root, n, seed)` writes the same set as `.gitexec/tickets/<ID>.yaml` files in
the layout `git exec new` produces, and `make_repo` commits them in a fresh repository (for
the CLI). Same (n, seed), same tickets. `Runner` times the CLI in a hermetic environment.

Shape, chosen to look like a real backlog rather than a worst or best case:
- tickets come in layers of about 1.5 * sqrt(n) (100,000 tickets: ~470 wide, ~210 deep);
- each ticket has 0-3 dependencies, mostly on the previous three layers, sometimes (10%)
  on any earlier ticket;
- about 2% of tickets belong to one of three chains (each depends on the chain's previous
  ticket), so the critical path is longer than the number of layers;
- ids are `<MODULE>-<number>`, so sorting by id is not creation (topological) order;
- most tickets declare 1-2 path globs under a module component shared by ~25 tickets,
  so the conservative strategy finds real overlaps; ~10% have no estimate.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gitexec.fields import parse_duration
from gitexec.tickets import TICKETS_DIR, Ticket

MODULES = ("core", "api", "ui", "db", "ops", "auth", "billing", "search")
ESTIMATES = ("5m", "10m", "15m", "20m", "30m", "45m", "1h", "1h30m", "2h", "4h")
VERBS = ("Add", "Fix", "Refactor", "Test", "Document", "Migrate", "Speed up", "Harden")
CHAINS = 3
CONFIG_YAML = "version: 1\njobs: 8\ndefault_agent: shell\n"
# Files are aged this far into the past before timing: well outside the parse cache's 2 s
# racy window (gitexec/cache.py), so warm runs take the stat-only path.
AGE_S = 10.0


def layer_width(n: int) -> int:
    return max(4, round(1.5 * math.sqrt(n)))


def _estimate_seconds(text: str) -> float:
    seconds = parse_duration(text)
    assert seconds is not None, text
    return seconds


def generate(n: int, seed: int = 0) -> list[Ticket]:
    """`n` valid tickets forming a DAG (dependencies only point to earlier tickets)."""
    rng = random.Random(seed)
    width = layer_width(n)
    components = max(2, n // (len(MODULES) * 25))
    ids: list[str] = []
    chain_tail: list[str | None] = [None] * CHAINS
    tickets: list[Ticket] = []
    for i in range(n):
        module = rng.choice(MODULES)
        ticket_id = f"{module.upper()}-{i:06d}"
        ids.append(ticket_id)
        layer = i // width

        deps: list[str] = []
        chain = rng.randrange(CHAINS) if rng.random() < 0.02 else None
        if chain is not None:
            tail = chain_tail[chain]
            if tail is not None:
                deps.append(tail)
            chain_tail[chain] = ticket_id
        if layer > 0:
            wanted = rng.choices((0, 1, 2, 3), weights=(15, 40, 30, 15))[0]
            lo, hi = max(0, (layer - 3) * width), layer * width
            for _ in range(min(wanted, 3 - len(deps))):
                j = rng.randrange(lo, hi) if rng.random() < 0.9 else rng.randrange(i)
                if ids[j] not in deps:
                    deps.append(ids[j])

        component = rng.randrange(components)
        base = f"src/{module}/c{component}"
        paths: list[str] = []
        kinds = rng.choices((0, 1, 2), weights=(20, 55, 25))[0]
        for _ in range(kinds):
            r = rng.random()
            if r < 0.6:
                glob = f"{base}/**"
            elif r < 0.85:
                glob = f"{base}/*.py"
            elif r < 0.97:
                glob = f"tests/{module}/test_c{component}.py"
            else:
                glob = f"docs/{module}/**"
            if glob not in paths:
                paths.append(glob)

        estimate = None if rng.random() < 0.1 else _estimate_seconds(rng.choice(ESTIMATES))
        priority = 0 if rng.random() < 0.8 else rng.randint(1, 3)
        tickets.append(
            Ticket(
                id=ticket_id,
                title=f"{rng.choice(VERBS)} {module} component c{component} (step {i})",
                file=f"{TICKETS_DIR}/{ticket_id}.yaml",
                depends_on=tuple(deps),
                paths=tuple(paths),
                priority=priority,
                estimate_s=estimate,
                run=f"make -C src/{module} c{component} STEP={i}",
            )
        )
    return tickets


def _duration_text(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes = rest // 60
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"


def _flow(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(x) for x in items) + "]"


def ticket_yaml(t: Ticket) -> str:
    """The ticket file, laid out like templates/ticket.yaml.j2 (`git exec new`)."""
    lines = [
        f"# {t.id}: {t.title}",
        "# Ticket fields are described in gitexec's README; `git exec check` validates this file.",
        f"id: {t.id}",
        f"title: {json.dumps(t.title)}",
        f"depends_on: {_flow(t.depends_on)}",
        f"paths: {_flow(t.paths)}",
    ]
    if t.priority:
        lines.append(f"priority: {t.priority}")
    if t.estimate_s is not None:
        lines.append(f"estimate: {_duration_text(t.estimate_s)}")
    if t.run:
        lines.append("# Command for the shell agent, run with `sh -c` in the ticket's worktree.")
        lines.append(f"run: {json.dumps(t.run)}")
    if sum(map(ord, t.id)) % 3 == 0:  # a third carry free text, as real tickets do
        lines.append("description: |")
        lines.append(f"  Part of the {t.title.lower()} work.")
        lines.append("  Keep the public interface stable; see the module README.")
    lines.append(f"status: {t.status.value}")
    return "\n".join(lines) + "\n"


def write_tickets(root: Path, n: int, seed: int = 0, *, age_s: float = 0.0) -> list[Ticket]:
    """Write `generate(n, seed)` and a config under `root/.gitexec`; return the tickets.

    With `age_s`, every file's mtime is set that many seconds in the past (see bench_check
    on the parse cache's racy-entry rule).
    """
    tickets = generate(n, seed)
    tdir = root / TICKETS_DIR
    tdir.mkdir(parents=True, exist_ok=True)
    config = root / ".gitexec" / "config.yaml"
    config.write_text(CONFIG_YAML, encoding="utf-8")
    written = [config]
    for t in tickets:
        path = root / t.file
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(ticket_yaml(t))
        written.append(path)
    if age_s:
        age_files(written, age_s)
    return tickets


def age_files(paths: list[Path], age_s: float) -> None:
    """Set atime and mtime `age_s` seconds in the past."""
    then = time.time() - age_s
    for path in paths:
        os.utime(path, (then, then))


def ticket_files(repo: Path) -> list[Path]:
    """The config and every ticket file of a repository written by `write_tickets`."""
    return [repo / ".gitexec" / "config.yaml", *sorted((repo / TICKETS_DIR).iterdir())]


def hermetic_env(work: Path) -> dict[str, str]:
    """The caller's environment without git/gitexec settings that could change a result.

    Bytecode is cached (as in a normal install) under `work`, never in the source tree:
    with PYTHONDONTWRITEBYTECODE and stale .pyc files every run would recompile gitexec.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GIT_", "GITEXEC_", "GITHUB_"))
        and k not in ("CI", "PYTHONDONTWRITEBYTECODE")
    }
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    empty = work / "empty.gitconfig"
    empty.touch()
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(empty),
            "GIT_AUTHOR_NAME": "Bench",
            "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "Bench",
            "GIT_COMMITTER_EMAIL": "bench@example.com",
            "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+00:00",
            "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+00:00",
            "NO_COLOR": "1",
        }
    )
    return env


def make_repo(repo: Path, n: int, seed: int, env: dict[str, str]) -> None:
    """A fresh repository on `main` whose one commit holds a config and `n` aged tickets."""
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    write_tickets(repo, n, seed, age_s=AGE_S)
    git("add", "-A")
    git("commit", "-q", "-m", f"{n} tickets")


def cache_dir(repo: Path) -> Path:
    """Where gitexec caches parsed tickets: `<git common dir>/gitexec/cache`."""
    return repo / ".git" / "gitexec" / "cache"


class Runner:
    """Runs the interpreter in a repository; exits with its stderr if it fails."""

    def __init__(self, python: str, env: dict[str, str]) -> None:
        self.python = python
        self.env = env

    def run(self, repo: Path, args: Sequence[str]) -> tuple[float, str]:
        """(wall seconds, stdout) of `python ARGS...` started in `repo`."""
        start = time.perf_counter()
        proc = subprocess.run(
            [self.python, *args], cwd=repo, env=self.env, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"{' '.join(args)} exited {proc.returncode} in {repo}:\n{proc.stderr}")
        return elapsed, proc.stdout
