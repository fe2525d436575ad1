"""End-to-end runs on real temporary repositories with real subprocess agents."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from gitexec import plan as plan_module
from gitexec.gitutil import find_repo
from gitexec.journal import read_records
from gitexec.pool import pool_dir
from gitexec.worker import AgentPlaces
from tests.helpers import commit_all, git, write_files
from tests.project import (
    FAKE_CONFIG,
    first_parent_tickets,
    gitexec,
    make_project,
    run_ok,
    show,
    status,
    ticket_yaml,
    tree_without_engine_files,
)


def journal(repo: Path, run_id: str) -> list[dict[str, Any]]:
    return read_records(repo / ".git" / "gitexec" / "runs" / run_id / "journal.jsonl")


# --- a 12-ticket DAG -------------------------------------------------------------------------

DAG = {
    "A": [],
    "B": [],
    "C": ["A"],
    "D": ["A", "B"],
    "E": ["B"],
    "F": ["C"],
    "G": ["C", "D"],
    "H": ["E"],
    "I": ["F", "G"],
    "J": ["G", "H"],
    "K": ["I"],
    "L": ["J", "K"],
}


def dag_tickets() -> dict[str, str]:
    tickets = {}
    for tid, deps in DAG.items():
        # Each ticket writes its own file, and one reads its dependencies' files, so the
        # result depends on each ticket starting from its dependencies' merged work.
        run = f"mkdir -p out && cat /dev/null {' '.join(f'out/{d}.txt' for d in deps)} > out/{tid}.txt"
        run += f" && echo {tid} >> out/{tid}.txt"
        tickets[tid] = ticket_yaml(
            tid, f"Build {tid}", depends_on=deps, paths=[f"out/{tid}.txt"], run=run
        )
    return tickets


@pytest.mark.parametrize("order", ["completion", "plan"])
def test_dag_same_tree_with_jobs_1_and_4(tmp_path: Path, order: str) -> None:
    config = f"version: 1\nmerge:\n  order: {order}\n"
    trees = []
    for jobs in (1, 4):
        repo = make_project(tmp_path / f"r{jobs}", dag_tickets(), config=config)
        code, out, err = run_ok(repo, "--jobs", str(jobs), "--run-id", f"j{jobs}")
        assert code == 0, out + err
        trees.append(tree_without_engine_files(repo, f"gitexec/j{jobs}"))
        # The ledger: every ticket exactly once on the first-parent chain.
        assert sorted(first_parent_tickets(repo, f"gitexec/j{jobs}")) == sorted(DAG)
        st = status(repo, f"j{jobs}")
        assert st["state"] == "completed"
        assert {t["status"] for t in st["tickets"].values()} == {"completed"}
    assert trees[0] == trees[1]
    assert len(trees[0]) == 13  # README + 12 outputs
    # L saw every ancestor's output through its dependencies.
    repo = tmp_path / "r4"
    l_out = show(repo, "gitexec/j4:out/L.txt").split()
    assert set(l_out) == set(DAG)


def test_status_written_back_in_merge_commit_with_comments_intact(tmp_path: Path) -> None:
    ticket = (
        "# Ticket A: keep this comment\n"
        "id: A\n"
        "title: 'Quoted title'   # and this one\n"
        "depends_on:\n"
        "  - B\n"
        "run: echo a > a.txt\n"
        "status: pending  # written by the engine\n"
        "# trailing comment\n"
    )
    repo = make_project(
        tmp_path / "r",
        {"A": ticket, "B": ticket_yaml("B", run="echo b > b.txt")},
    )
    code, out, err = run_ok(repo, "--run-id", "r1")
    assert code == 0, out + err
    text = show(repo, "gitexec/r1:.gitexec/tickets/A.yaml")
    assert text.startswith(ticket.split("status:")[0])  # everything before status, unchanged
    assert "status: completed  # written by the engine\n" in text
    assert "# trailing comment\n" in text
    assert "  run: r1\n" in text
    assert "  attempts: 1\n" in text
    merge_of_a = git(repo, "log", "--format=%H %s", "--first-parent", "gitexec/r1")
    merge_commit = next(line.split()[0] for line in merge_of_a.splitlines() if "Merge A:" in line)
    # The status change is part of A's own merge commit.
    changed = git(repo, "diff", "--name-only", f"{merge_commit}^1", merge_commit).split()
    assert ".gitexec/tickets/A.yaml" in changed
    assert "a.txt" in changed
    message = git(repo, "log", "-1", "--format=%B", merge_commit)
    assert "Gitexec-Run: r1" in message
    assert "Gitexec-Ticket: A" in message
    # The ticket's own commit carries trailers too.
    ticket_commit = git(repo, "rev-parse", "refs/gitexec/r1/A").strip()
    assert git(repo, "log", "-1", "--format=%s", ticket_commit).strip() == "A: Quoted title"


def test_failure_blocks_dependents_independent_work_continues(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo broken >&2; exit 7"),
            "B": ticket_yaml("B", depends_on=["A"], run="echo b > b.txt"),
            "C": ticket_yaml("C", depends_on=["B"], run="echo c > c.txt"),
            "D": ticket_yaml("D", run="echo d > d.txt"),
        },
    )
    code, out, _ = run_ok(repo, "--run-id", "f")
    assert code == 1
    st = status(repo, "f")
    states = {tid: t["status"] for tid, t in st["tickets"].items()}
    assert states == {"A": "failed", "B": "blocked", "C": "blocked", "D": "completed"}
    assert st["tickets"]["A"]["reason"] == "agent exited with status 7"
    assert st["tickets"]["C"]["reason"] == "dependency B blocked"
    log = (repo / ".git/gitexec/runs/f/logs/A.log").read_text()
    assert "broken" in log
    # Unmerged tickets get their status in a final commit on the integration branch.
    assert "status: failed" in show(repo, "gitexec/f:.gitexec/tickets/A.yaml")
    assert "status: blocked" in show(repo, "gitexec/f:.gitexec/tickets/C.yaml")
    last = git(repo, "log", "-1", "--format=%s", "gitexec/f").strip()
    assert last == "gitexec: record status of 3 unmerged ticket(s)"
    assert "failed  A: agent exited with status 7" in out


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    run = f"sleep 60 & echo $! > {marker}; sleep 60"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=run, timeout="1s")})
    code, _, _ = run_ok(repo, "--run-id", "t")
    assert code == 1
    st = status(repo, "t")
    assert st["tickets"]["A"]["status"] == "failed"
    assert st["tickets"]["A"]["reason"] == "agent timed out after 1s"
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the agent's background child survived the timeout")


def test_retries_then_fallback_agent(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    config = FAKE_CONFIG + (
        "  flaky:\n"
        f"    command: [sh, -c, 'echo x >> {counter}; exit 1']\n"
        "    retries: 1\n"
        "    fallback: fake\n"
        "retry_backoff: 0.01s\n"
    )
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", agent="flaky", prompt="WRITE a.txt rescued\n")},
        config=config,
    )
    code, out, err = run_ok(repo, "--run-id", "fb")
    assert code == 0, out + err
    assert counter.read_text().count("x") == 2  # first try + one retry
    st = status(repo, "fb")
    assert st["tickets"]["A"]["agent"] == "fake"
    assert st["tickets"]["A"]["attempts"] == 3
    assert show(repo, "gitexec/fb:a.txt") == "rescued"


def test_validate_failure_fails_the_ticket(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="echo 1 > n.txt", validate=["grep -q 2 n.txt"])},
    )
    code, _, _ = run_ok(repo, "--run-id", "v")
    assert code == 1
    st = status(repo, "v")
    assert st["tickets"]["A"]["reason"] == "validation 'grep -q 2 n.txt' exited 1"
    assert "a.txt" not in git(repo, "ls-tree", "-r", "--name-only", "gitexec/v")


def test_empty_change_completes_with_note(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    code, _, _ = run_ok(repo, "--run-id", "e")
    assert code == 0
    st = status(repo, "e")
    assert st["tickets"]["A"]["status"] == "completed"
    assert st["tickets"]["A"]["note"] == "no changes"
    assert 'note: "no changes"' in show(repo, "gitexec/e:.gitexec/tickets/A.yaml")


def test_agent_commits_kept_deletions_and_gitignore_honoured(tmp_path: Path) -> None:
    prompt = "WRITE own.txt mine\nCOMMIT agent: my own commit\nWRITE later.txt after\nDELETE old.txt\nWRITE build/junk.o x\n"
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", agent="fake", prompt=prompt)},
        config=FAKE_CONFIG,
        files={"old.txt": "old\n", ".gitignore": "build/\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "c")
    assert code == 0, out + err
    files = git(repo, "ls-tree", "-r", "--name-only", "gitexec/c").split()
    assert "own.txt" in files and "later.txt" in files
    assert "old.txt" not in files
    assert not any(f.startswith("build/") for f in files)
    history = git(repo, "log", "--format=%s", "refs/gitexec/c/A").splitlines()
    assert history[:2] == ["A: Ticket A", "agent: my own commit"]


def test_agent_environment_and_rendered_prompt(tmp_path: Path) -> None:
    dump = "env | grep ^GITEXEC_ | sort > env.txt"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=dump)})
    code, _, _ = run_ok(repo, "--run-id", "env")
    assert code == 0
    env = dict(line.split("=", 1) for line in show(repo, "gitexec/env:env.txt").splitlines())
    assert env["GITEXEC_RUN"] == "env"
    assert env["GITEXEC_TICKET"] == "A"
    assert env["GITEXEC_TICKET_FILE"].endswith("/slot-1/.gitexec/tickets/A.yaml")
    assert env["GITEXEC_WORKTREE"] == str(pool_dir(find_repo(repo)) / "slot-1")
    assert env["GITEXEC_BASE"] == git(repo, "rev-parse", "main").strip()
    assert env["GITEXEC_PROGRESS_FILE"].endswith("/runs/env/progress/A")


def test_agent_edits_to_ticket_files_are_not_collected(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="echo hacked >> .gitexec/tickets/A.yaml; echo a > a.txt")},
    )
    code, _, _ = run_ok(repo, "--run-id", "g")
    assert code == 0
    text = show(repo, "gitexec/g:.gitexec/tickets/A.yaml")
    assert "\nhacked\n" not in text and "status: completed" in text


@pytest.mark.parametrize(
    ("scope", "code", "state"), [("warn", 0, "completed"), ("enforce", 1, "failed")]
)
def test_scope_check(tmp_path: Path, scope: str, code: int, state: str) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml(
                "A", paths=["src/**"], run="mkdir -p src && echo x > src/a && echo y > stray.txt"
            )
        },
        config=f"version: 1\nscope: {scope}\n",
    )
    got, _, _ = run_ok(repo, "--run-id", "s")
    assert got == code
    st = status(repo, "s")
    assert st["tickets"]["A"]["status"] == state
    assert st["tickets"]["A"]["scope_violations"] == ["stray.txt"]


def test_overlapping_paths_never_run_together(tmp_path: Path) -> None:
    tickets = {
        tid: ticket_yaml(
            tid, paths=["shared/**"], run=f"sleep 0.3; mkdir -p shared; echo {tid} > shared/{tid}"
        )
        for tid in ("A", "B", "C")
    }
    tickets["D"] = ticket_yaml(
        "D", paths=["other/**"], run="sleep 0.3; mkdir -p other; echo d > other/d"
    )
    repo = make_project(tmp_path / "r", tickets)
    code, _, _ = run_ok(repo, "--run-id", "o", "--jobs", "4")
    assert code == 0
    spans: dict[str, list[float]] = {}
    for e in journal(repo, "o"):
        if e["event"] == "agent-started":
            spans[str(e["ticket"])] = [float(e["t"])]
        elif e["event"] == "agent-exited":
            spans[str(e["ticket"])].append(float(e["t"]))
    shared = sorted((spans[t] for t in "ABC"), key=lambda s: s[0])
    for first, second in itertools.pairwise(shared):
        assert first[1] <= second[0]
    # D overlaps nothing, so it ran alongside one of them.
    assert any(spans["D"][0] < s[1] and s[0] < spans["D"][1] for s in shared)


def test_max_parallel_per_agent(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    config = (
        "version: 1\nagents:\n  slow:\n"
        f"    command: [sh, -c, 'echo start >> {log}; sleep 0.3; echo end >> {log}']\n"
        "    max_parallel: 1\n"
    )
    repo = make_project(
        tmp_path / "r", {t: ticket_yaml(t, agent="slow") for t in "ABC"}, config=config
    )
    code, _, _ = run_ok(repo, "--run-id", "m", "--jobs", "3")
    assert code == 0
    assert log.read_text().split() == ["start", "end"] * 3


def test_worktrees_are_pooled_and_setup_runs_once_per_slot(tmp_path: Path) -> None:
    counter = tmp_path / "setups"
    config = (
        "version: 1\nworktree:\n"
        f"  setup: ['echo x >> {counter}; mkdir -p node_modules; echo dep > node_modules/dep']\n"
    )
    tickets = {
        # Validation runs after the commit, so its junk is an untracked leftover in the slot.
        t: ticket_yaml(
            t,
            run=f"test -f node_modules/dep && echo {t} > {t}.txt",
            validate=[f"echo x > junk-{t}"],
        )
        for t in "ABCDEF"
    }
    repo = make_project(
        tmp_path / "r", tickets, config=config, files={".gitignore": "node_modules/\n"}
    )
    code, out, err = run_ok(repo, "--run-id", "p1", "--jobs", "2")
    assert code == 0, out + err
    pool = pool_dir(find_repo(repo))
    slots = sorted(p.name for p in pool.iterdir() if p.is_dir())
    assert slots == ["slot-1", "slot-2", "slot-3"][: len(slots)] and len(slots) <= 3
    assert counter.read_text().count("x") == len(slots)
    # A second run reuses the pool: no new setup.
    code, _, _ = run_ok(repo, "--run-id", "p2", "--jobs", "2")
    assert code == 0
    assert counter.read_text().count("x") == len(slots)
    # Untracked leftovers were cleaned from the slot between tickets: only the last ticket's remain.
    for slot in slots:
        leftovers = list((pool / slot).glob("junk-*"))
        assert len(leftovers) <= 1
    assert not any(
        "junk" in f for f in git(repo, "ls-tree", "-r", "--name-only", "gitexec/p2").split()
    )


def test_second_run_of_completed_tickets_runs_nothing(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a.txt")})
    assert run_ok(repo, "--run-id", "one")[0] == 0
    code, out, _ = run_ok(repo, "--run-id", "two", "--base", "gitexec/one")
    assert code == 0
    assert "nothing to run: all 1 ticket(s) are completed" in out


def test_only_and_with_deps(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a"),
            "B": ticket_yaml("B", depends_on=["A"], run="echo b > b"),
            "C": ticket_yaml("C", run="echo c > c"),
        },
    )
    code, _, err = gitexec(repo, "run", "--no-monitor", "--only", "B")
    assert code == 2
    assert "B depends on A, which is neither completed nor selected; add --with-deps" in err
    code, _, _ = run_ok(repo, "--only", "B", "--with-deps", "--run-id", "w")
    assert code == 0
    assert sorted(status(repo, "w")["tickets"]) == ["A", "B"]


def test_barrier_runs_group_by_group(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="sleep 0.5; echo a > a"),
            "B": ticket_yaml("B", run="echo b > b"),
            "C": ticket_yaml("C", depends_on=["B"], run="echo c > c"),
        },
    )
    code, _, _ = run_ok(repo, "--barrier", "--run-id", "b")
    assert code == 0
    events = journal(repo, "b")
    merged_a = next(
        e["seq"] for e in events if e["event"] == "ticket-merged" and e["ticket"] == "A"
    )
    start_c = next(
        e["seq"] for e in events if e["event"] == "ticket-dispatched" and e["ticket"] == "C"
    )
    assert merged_a < start_c  # without --barrier, C would start as soon as B merged


def test_dry_run_executes_nothing(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a", estimate="1m"),
            "B": ticket_yaml("B", depends_on=["A"], run="true", estimate="2m"),
        },
    )
    code, out, _ = gitexec(repo, "run", "--dry-run", "--run-id", "d")
    assert code == 0
    assert "    1  A          1       0s       1m  -" in out
    assert "    2  B          1       1m       3m  A" in out
    assert "estimated wall time 3m; nothing was executed" in out
    assert "gitexec/d" not in git(repo, "branch", "--list", "gitexec/*")


def test_a_dry_run_simulates_its_schedule_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's plan needs no makespan estimate: a dry run used to simulate the same
    schedule twice (40 % of a warm dry run of 10,000 tickets)."""
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="true", estimate="1m"),
            "B": ticket_yaml("B", depends_on=["A"], run="true", estimate="2m"),
        },
    )
    simulated: list[int] = []
    real = plan_module._list_schedule

    def counted(*args: Any, **kwargs: Any) -> Any:
        simulated.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "_list_schedule", counted)
    code, out, _ = gitexec(repo, "run", "--dry-run", "--run-id", "d")
    assert code == 0 and "estimated wall time 3m; nothing was executed" in out
    assert len(simulated) == 1
    code, out, _ = gitexec(repo, "plan")  # `plan` still estimates
    assert code == 0 and "makespan_s: 180," in out


def test_conflict_ends_as_conflict_with_paths_recorded(tmp_path: Path) -> None:
    config = "version: 1\nmerge:\n  on_conflict: [rules, fail]\n"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="sleep 0.2; echo from-a > shared.txt"),
            "B": ticket_yaml("B", run="sleep 0.6; echo from-b > shared.txt"),
        },
        config=config,
        files={"shared.txt": "base\n"},
    )
    code, _out, _ = run_ok(repo, "--run-id", "x")
    assert code == 1
    st = status(repo, "x")
    assert st["tickets"]["A"]["status"] == "completed"
    assert st["tickets"]["B"]["status"] == "conflict"
    assert st["tickets"]["B"]["conflicts"] == ["shared.txt"]
    assert "collided with A" in st["tickets"]["B"]["reason"]
    conflict = next(e for e in journal(repo, "x") if e["event"] == "conflict")
    text = conflict["text"]["shared.txt"]
    assert "<<<<<<< integration (A)" in text and ">>>>>>> B" in text
    assert show(repo, "gitexec/x:shared.txt") == "from-a\n"


def test_a_conflicted_path_named_with_a_yaml_line_break_is_recorded_exactly(
    tmp_path: Path,
) -> None:
    """U+0085 (NEL) is a line break to YAML readers: written raw into the ticket file's
    `result`, the conflicted path read back as another name."""
    config = "version: 1\nmerge:\n  on_conflict: [fail]\n"
    name = "shared\x85notes.txt"
    write = "printf 'from-%s\\n' {} > \"$(printf 'shared\\302\\205notes.txt')\""
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="sleep 0.2; " + write.format("a")),
            "B": ticket_yaml("B", run="sleep 0.6; " + write.format("b")),
        },
        config=config,
        files={name: "base\n"},
    )
    code, _out, _ = run_ok(repo, "--run-id", "x")
    assert code == 1
    assert status(repo, "x")["tickets"]["B"]["conflicts"] == [name]
    ticket = YAML(typ="safe").load(show(repo, "gitexec/x:.gitexec/tickets/B.yaml"))
    assert ticket["status"] == "conflict"
    assert ticket["result"]["conflicts"] == [name]


def test_rerun_resolves_conflict_on_merged_head(tmp_path: Path) -> None:
    # B conflicts; re-run from the merged head it appends to A's content instead.
    config = FAKE_CONFIG + "merge:\n  on_conflict: [rules, rerun, fail]\n"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo from-a > shared.txt"),
            "B": ticket_yaml(
                "B",
                run='sleep 0.5; if [ -n "$GITEXEC_CONFLICT_FILES" ]; then echo from-b >> shared.txt; else echo from-b > shared.txt; fi',
            ),
        },
        config=config,
        files={"shared.txt": "base\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "rr")
    assert code == 0, out + err
    assert show(repo, "gitexec/rr:shared.txt") == "from-a\nfrom-b\n"
    st = status(repo, "rr")
    assert st["metrics"]["conflicts"] == 1
    assert st["metrics"]["conflicts_auto_resolved"] == 1


def test_union_rule_settles_changelog(tmp_path: Path) -> None:
    config = "version: 1\nmerge:\n  rules:\n    - {paths: [CHANGELOG.md], strategy: union}\n"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml(
                "A", paths=["CHANGELOG.md", "a"], run="echo '- a' >> CHANGELOG.md; echo a > a"
            ),
            "B": ticket_yaml(
                "B",
                paths=["CHANGELOG.md", "b"],
                run="sleep 0.3; echo '- b' >> CHANGELOG.md; echo b > b",
            ),
        },
        config=config,
        files={"CHANGELOG.md": "# Changes\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "u")
    assert code == 0, out + err
    assert show(repo, "gitexec/u:CHANGELOG.md") == "# Changes\n- a\n- b\n"


def test_user_checkout_untouched_byte_for_byte(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a.txt; echo changed > README.md"),
            "B": ticket_yaml("B", run="exit 1"),
        },
        files={"tracked.txt": "committed\n"},
    )
    # Uncommitted, staged and untracked work, a stash and another branch.
    write_files(repo, {"tracked.txt": "stashed\n"})
    git(repo, "stash")
    git(repo, "branch", "other")
    write_files(repo, {"tracked.txt": "staged\n"})
    git(repo, "add", "tracked.txt")
    write_files(repo, {"tracked.txt": "unstaged\n", "untracked.txt": "mine\n"})

    def snapshot() -> dict[str, object]:
        files = {
            str(p.relative_to(repo)): p.read_bytes()
            for p in repo.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(repo).parts
        }
        refs = [r for r in git(repo, "show-ref").splitlines() if "gitexec" not in r]
        return {
            "files": files,
            "index": (repo / ".git/index").read_bytes(),
            "HEAD": (repo / ".git/HEAD").read_bytes(),
            "refs": refs,
            "stash": git(repo, "stash", "list"),
        }

    before = snapshot()
    code, _, _ = run_ok(repo, "--run-id", "safe")
    assert code == 1
    assert snapshot() == before


def test_into_fast_forwards_a_branch_not_checked_out(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a.txt")})
    git(repo, "branch", "release")
    code, out, _ = run_ok(repo, "--run-id", "i", "--into", "release")
    assert code == 0
    assert "fast-forwarded release" in out
    assert git(repo, "rev-parse", "release") == git(repo, "rev-parse", "gitexec/i")


def test_into_checked_out_branch_merges_or_refuses_dirty(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a.txt")})
    write_files(repo, {"README.md": "local edit\n"})
    code, _, err = run_ok(repo, "--run-id", "dirty", "--into", "main")
    assert code == 2
    assert "checked out at" in err and "uncommitted changes" in err
    assert (repo / "README.md").read_text() == "local edit\n"
    git(repo, "checkout", "README.md")
    code, _out, err = run_ok(repo, "--run-id", "clean", "--into", "main")
    assert code == 0, err
    assert (repo / "a.txt").read_text() == "a\n"
    assert git(repo, "status", "--porcelain") == ""


def test_shallow_clone_refused(tmp_path: Path) -> None:
    origin = make_project(tmp_path / "origin", {"A": ticket_yaml("A", run="true")})
    commit_all(origin, "second")
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", "shallow")
    code, _, err = run_ok(tmp_path / "shallow")
    assert code == 2
    assert "shallow clone" in err and "fetch-depth: 0" in err


def test_one_engine_per_repository(tmp_path: Path) -> None:
    from gitexec.journal import EngineLock

    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    lock = EngineLock(repo / ".git" / "gitexec")
    lock.acquire("other-run")
    try:
        code, _, err = run_ok(repo)
    finally:
        lock.release()
    assert code == 2
    assert "another gitexec engine is running in this repository (run other-run, pid" in err


def test_uncommitted_tickets_are_not_run(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a")})
    write_files(repo, {".gitexec/tickets/B.yaml": ticket_yaml("B", run="echo b > b")})
    code, _out, err = run_ok(repo, "--run-id", "uc")
    assert code == 0
    assert "uncommitted changes in .gitexec/ are not part of this run" in err
    assert list(status(repo, "uc")["tickets"]) == ["A"]


def test_status_json_shape_and_metrics(tmp_path: Path) -> None:
    met = tmp_path / "met"  # each agent waits (bounded) until all four have started
    met.mkdir()
    wait = f"for i in $(seq 200); do [ $(ls {met} | wc -l) -ge 4 ] && break; sleep 0.05; done"
    repo = make_project(
        tmp_path / "r",
        {
            t: ticket_yaml(t, run=f"touch {met}/{t}; {wait}; sleep 0.2; echo {t} > {t}")
            for t in "ABCD"
        },
    )
    assert run_ok(repo, "--run-id", "sj", "--jobs", "4")[0] == 0
    st = status(repo, "sj")
    assert st["run"] == "sj"
    assert st["integration"] == "refs/heads/gitexec/sj"
    assert st["head"] == git(repo, "rev-parse", "gitexec/sj").strip()
    a = st["tickets"]["A"]
    assert set(a) >= {
        "status",
        "attempts",
        "agent",
        "slot",
        "started_at",
        "finished_at",
        "duration_s",
        "commit",
    }
    m = st["metrics"]
    assert m["total"] == 4 and m["completed"] == 4 and m["failed"] == 0
    assert m["parallelism_factor"] > 1.0  # the four agents overlapped
    assert 0 < m["resource_utilization"] <= 1
    assert 0 < m["coordination_efficiency"] <= 1
    code, out, _ = gitexec(repo, "agents", "--run", "sj", "--format", "json", "--include-metrics")
    assert code == 0
    agents = json.loads(out)
    assert agents["metrics"]["shell"]["completed"] == 4


def test_sigterm_stops_gracefully_and_preserves_state(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="sleep 1; echo a > a"),
            "B": ticket_yaml("B", depends_on=["A"], run="echo b > b"),
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", "sig"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal_path = repo / ".git/gitexec/runs/sig/journal.jsonl"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "agent-started" not in (
        journal_path.read_text() if journal_path.exists() else ""
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    st = status(repo, "sig")
    assert st["state"] == "stopped"
    assert st["tickets"]["A"]["status"] == "completed"  # the running ticket finished
    assert st["tickets"]["B"]["status"] == "pending"  # and nothing new started


def test_gate_failure_rolls_back_exactly_that_ticket(tmp_path: Path) -> None:
    # The gate fails whenever bad.txt exists: only B creates it.
    config = "version: 1\ngates:\n  integration: ['test ! -e bad.txt']\n"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a.txt"),
            "B": ticket_yaml("B", run="sleep 0.2; echo b > bad.txt"),
            "C": ticket_yaml("C", run="sleep 0.4; echo c > c.txt"),
            "D": ticket_yaml("D", depends_on=["B"], run="echo d > d.txt"),
        },
        config=config,
    )
    code, out, err = run_ok(repo, "--run-id", "g")
    assert code == 1, out + err
    st = status(repo, "g")
    states = {tid: t["status"] for tid, t in st["tickets"].items()}
    assert states == {"A": "completed", "B": "failed", "C": "completed", "D": "blocked"}
    assert st["tickets"]["B"]["reason"].startswith(
        "integration gate failed: gate 'test ! -e bad.txt' exited 1"
    )
    files = git(repo, "ls-tree", "-r", "--name-only", "gitexec/g").split()
    assert "a.txt" in files and "c.txt" in files and "bad.txt" not in files
    assert sorted(first_parent_tickets(repo, "gitexec/g")) == ["A", "C"]
    assert st["metrics"]["gate_failures"] == 1


def test_gate_batch_is_bisected_to_the_culprit(tmp_path: Path) -> None:
    counter = tmp_path / "gate-runs"
    config = (
        "version: 1\n"
        "gates:\n"
        "  every: 8\n"
        f"  integration: ['echo run >> {counter}; test ! -e out/T5']\n"
    )
    tickets = {
        f"T{i}": ticket_yaml(f"T{i}", run=f"mkdir -p out; echo {i} > out/T{i}") for i in range(8)
    }
    repo = make_project(tmp_path / "r", tickets, config=config)
    code, out, err = run_ok(repo, "--run-id", "bis", "--jobs", "8")
    assert code == 1, out + err
    st = status(repo, "bis")
    failed = [tid for tid, t in st["tickets"].items() if t["status"] == "failed"]
    assert failed == ["T5"]
    assert sorted(first_parent_tickets(repo, "gitexec/bis")) == sorted(set(tickets) - {"T5"})
    # One run for the batch, three to bisect 8 merges, one for the re-merged rest.
    runs = counter.read_text().count("run")
    assert runs <= 6, runs
    events = journal(repo, "bis")
    assert [e["event"] for e in events].count("gate-failed") == 1


def test_sequential_fallback_reruns_alone_on_the_merged_head(tmp_path: Path) -> None:
    config = "version: 1\nmerge:\n  on_conflict: [rules, sequential, fail]\n"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo from-a >> shared.txt"),
            "B": ticket_yaml("B", run="sleep 0.4; echo from-b >> shared.txt"),
            "C": ticket_yaml("C", run="sleep 0.3; echo c > c.txt"),
        },
        config=config,
        files={"shared.txt": "base\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "seq", "--jobs", "3")
    assert code == 0, out + err
    assert show(repo, "gitexec/seq:shared.txt") == "base\nfrom-a\nfrom-b\n"
    events = journal(repo, "seq")
    conflict = next(e for e in events if e["event"] == "conflict")
    assert conflict["ticket"] == "B" and conflict["step"] == "sequential"
    alone = next(e for e in events if e["event"] == "ticket-dispatched" and e.get("sequential"))
    assert alone["ticket"] == "B"
    # Nothing else ran while B ran alone.
    started = events.index(alone)
    finished = next(
        i for i, e in enumerate(events) if i > started and e["event"] == "ticket-merged"
    )
    assert not any(e["event"] == "ticket-dispatched" for e in events[started + 1 : finished])
    st = status(repo, "seq")
    assert st["metrics"]["conflicts"] == 1 and st["metrics"]["conflicts_auto_resolved"] == 1


def test_validate_checks_the_final_result(tmp_path: Path) -> None:
    counter = tmp_path / "gate-count"
    # A flaky gate: passes once (after the merge), fails on every later run.
    gate = f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ $n -lt 1 ]"
    config = f"version: 1\ngates:\n  integration: [{json.dumps(gate)}]\n"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a")}, config=config)
    code, out, err = run_ok(repo, "--run-id", "v1", "--validate")
    assert code == 1, out + err
    st = status(repo, "v1")
    assert st["tickets"]["A"]["status"] == "completed"
    assert st["state"] == "failed"
    assert st["validation"]["ok"] is False
    assert "the final result fails its gate" in st["validation"]["problems"][0]
    assert "validation failed" in err

    plain = make_project(tmp_path / "p", {"A": ticket_yaml("A", run="echo a > a")})
    code, _, _ = run_ok(plain, "--run-id", "v2", "--validate")
    assert code == 0
    assert status(plain, "v2")["validation"] == {"ok": True, "problems": []}


def test_resource_weights_limit_what_runs_together(tmp_path: Path) -> None:
    # jobs 2 gives two units of each resource: a ticket weighing 2 runs alone.
    tickets = {
        t: ticket_yaml(t, resources={"cpu": 2}, run=f"sleep 0.2; echo {t} > {t}") for t in "AB"
    }
    tickets["C"] = ticket_yaml("C", resources={"cpu": 1}, run="sleep 0.2; echo c > c")
    repo = make_project(tmp_path / "r", tickets)
    assert run_ok(repo, "--run-id", "res", "--jobs", "2")[0] == 0
    spans: dict[str, list[float]] = {}
    for e in journal(repo, "res"):
        if e["event"] in ("agent-started", "agent-exited"):
            spans.setdefault(str(e["ticket"]), []).append(float(e["t"]))
    heavy = sorted((spans["A"], spans["B"]))
    assert heavy[0][1] <= heavy[1][0]  # A and B never together
    for other in heavy:  # and C never beside a ticket that takes both units
        assert spans["C"][1] <= other[0] or other[1] <= spans["C"][0]


def test_markdown_ticket_prompt_and_status(tmp_path: Path) -> None:
    ticket = (
        "---\n"
        "id: DOC-1\n"
        "title: Write the guide\n"
        "agent: fake\n"
        "---\n"
        "Please write the guide.\n"
        "\n"
        "WRITE docs/guide.md # Guide\\n\n"
    )
    repo = make_project(tmp_path / "r", {}, config=FAKE_CONFIG)
    write_files(repo, {".gitexec/tickets/DOC-1.md": ticket})
    commit_all(repo, "markdown ticket")
    code, out, err = run_ok(repo, "--run-id", "md")
    assert code == 0, out + err
    assert show(repo, "gitexec/md:docs/guide.md") == "# Guide\n"
    text = show(repo, "gitexec/md:.gitexec/tickets/DOC-1.md")
    front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    assert "status: completed" in front
    assert body == "Please write the guide.\n\nWRITE docs/guide.md # Guide\\n\n"


# --- who gets a free agent place ---------------------------------------------------------------


def test_the_next_link_of_a_chain_is_not_overtaken_by_a_spare_waiting_first(
    tmp_path: Path,
) -> None:
    # jobs 1: A runs, S (less urgent) waits in the spare slot. When A exits, its place
    # passes on only once A has merged and C, which A made ready, claims it.
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", estimate="10s", run="sleep 0.5; echo A > A.txt"),
            "C": ticket_yaml("C", estimate="10s", depends_on=["A"], run="echo C > C.txt"),
            "S": ticket_yaml("S", estimate="1s", run="echo S > S.txt"),
        },
    )
    code, out, err = run_ok(repo, "--jobs", "1", "--run-id", "r1")
    assert code == 0, out + err
    started = [r["ticket"] for r in journal(repo, "r1") if r["event"] == "agent-started"]
    assert started == ["A", "C", "S"]
    assert sorted(first_parent_tickets(repo, "gitexec/r1")) == ["A", "C", "S"]


def test_a_place_goes_to_the_most_urgent_claim_and_waits_for_the_engine_to_hand_it_back() -> None:
    places = AgentPlaces(1)
    never = threading.Event()
    a, c, s = 1, 2, 3
    places.claim(a, (0, -20.0, "A"), makes_ready=(0, -10.0, "C"))
    places.claim(s, (0, -1.0, "S"))
    took: list[int] = []

    def take(place: int) -> None:
        with places.held(never, place) as admitted:
            assert admitted
            took.append(place)

    with places.held(never, a):
        waiter = threading.Thread(target=take, args=(s,))
        waiter.start()
        assert places.must_wait(s)
    # A's agent exited: its place is still taken until the engine hands it back.
    time.sleep(0.3)
    assert took == []
    places.finished(a)
    places.claim(c, (0, -10.0, "C"))  # dispatched in the same pass, more urgent than S
    places.hand_back()
    time.sleep(0.3)
    assert took == []  # kept for C, which is still preparing its slot
    take(c)
    places.finished(c)
    places.hand_back()
    waiter.join(timeout=5)
    assert took == [c, s]


def test_the_place_of_an_agent_whose_merge_makes_nothing_more_urgent_ready_is_free_at_once() -> (
    None
):
    places = AgentPlaces(1)
    never = threading.Event()
    places.claim(1, (0, -20.0, "A"), makes_ready=(0, -0.5, "B"))  # B: less urgent than S
    places.claim(2, (0, -1.0, "S"))
    with places.held(never, 1):
        assert places.must_wait(2)
    assert not places.must_wait(2)  # no hand-back needed
