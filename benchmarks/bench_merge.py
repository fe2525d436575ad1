"""Per-merge cost of gitexec's in-memory merge against git merge-tree and pygit2 merge_commits.

    python benchmarks/bench_merge.py [--files 20000] [--merges 50] [--seed 1] [--json]

A generated repository (benchmarks/_repo.py) gets M ticket commits, each changing 1-3 files
against the same base; about a third also edit one of three long shared files, each its own
line, so once an earlier ticket changed that file the merge needs a (clean) content merge. Each
method merges the tickets one by one into its own integration chain (a merge commit each):

  (1) gitexec.merge.merge_trees + pygit2 create_commit
  (2) git merge-tree --write-tree + git commit-tree (subprocesses)
  (3) pygit2 Repository.merge_commits + Index.write_tree + create_commit

(1) and (2) must produce identical trees at every step. Results are ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _repo import file_path, file_text, make_repo

from gitexec.gitutil import scrubbed_env
from gitexec.merge import merge_trees, update_tree

HOT_FILES = 3
SIG = pygit2.Signature("bench", "bench@example.com", 1_700_000_000, 0)


@dataclass(frozen=True)
class Ticket:
    commit: pygit2.Oid
    tree: pygit2.Oid
    content_merge: bool


def _edit_line(data: bytes, line: int, text: str) -> bytes:
    lines = data.split(b"\n")
    lines[line] = text.encode()
    return b"\n".join(lines)


def make_tickets(
    repo: pygit2.Repository, files: int, merges: int, seed: int
) -> tuple[pygit2.Oid, list[Ticket]]:
    """A base commit (main plus a few long shared files) and one commit per ticket on it."""
    rnd = random.Random(seed)
    main = repo.revparse_single("main")
    assert isinstance(main, pygit2.Commit)
    hot_lines = 4 * merges + 10
    hot = {f"src/shared{n}.txt": file_text(rnd, hot_lines) for n in range(HOT_FILES)}
    base_tree = update_tree(repo, main.tree_id, {p: (d, 0o100644) for p, d in hot.items()})
    base = repo.create_commit(None, SIG, SIG, "base", base_tree, [main.id])
    tree = repo[base_tree]
    assert isinstance(tree, pygit2.Tree)
    picks = rnd.sample(range(files), k=min(files, 3 * merges))
    shared_touched: set[str] = set()
    tickets = []
    for k in range(merges):
        changes: dict[str, tuple[bytes, int] | None] = {}
        for _ in range(rnd.randint(1, 3)):
            if rnd.random() < 0.1:
                changes[f"src/new/ticket{k}-{len(changes)}.txt"] = (file_text(rnd, 12), 0o100644)
                continue
            path = file_path(picks.pop(), files)
            blob = tree[path]
            assert isinstance(blob, pygit2.Blob)
            changes[path] = (
                _edit_line(blob.data, rnd.randrange(8), f"ticket {k} was here"),
                0o100644,
            )
        content_merge = False
        if rnd.random() < 0.35:
            # Tickets touching a shared file each edit their own line (4 lines apart): once an
            # earlier ticket changed the same file, landing this one needs a clean content merge.
            path = f"src/shared{k % HOT_FILES}.txt"
            content_merge = path in shared_touched
            shared_touched.add(path)
            changes[path] = (_edit_line(hot[path], 4 * k + 2, f"ticket {k} line"), 0o100644)
        ticket_tree = update_tree(repo, base_tree, changes)
        commit = repo.create_commit(None, SIG, SIG, f"ticket {k}", ticket_tree, [base])
        tickets.append(Ticket(commit, ticket_tree, content_merge))
    return base, tickets


class Methods:
    """The three ways of landing a ticket: each returns (merge commit, tree)."""

    def __init__(self, repo: pygit2.Repository, path: Path, base: pygit2.Oid) -> None:
        self.repo = repo
        self.path = path
        self.env = scrubbed_env()
        base_commit = repo[base]
        assert isinstance(base_commit, pygit2.Commit)
        self.base_tree: pygit2.Oid = base_commit.tree_id

    def tree_of(self, commit: pygit2.Oid) -> pygit2.Oid:
        obj = self.repo[commit]
        assert isinstance(obj, pygit2.Commit)
        return obj.tree_id

    def with_gitexec(self, head: pygit2.Oid, ticket: Ticket) -> tuple[pygit2.Oid, pygit2.Oid]:
        result = merge_trees(self.repo, self.base_tree, self.tree_of(head), ticket.tree)
        if result.tree is None:
            raise SystemExit(f"gitexec: unexpected conflict: {result.conflicts}")
        commit = self.repo.create_commit(
            None, SIG, SIG, "Merge ticket", result.tree, [head, ticket.commit]
        )
        return commit, result.tree

    def with_git(self, head: pygit2.Oid, ticket: Ticket) -> tuple[pygit2.Oid, pygit2.Oid]:
        merged = subprocess.run(
            ["git", "merge-tree", "--write-tree", str(head), str(ticket.commit)],
            cwd=self.path,
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        if merged.returncode != 0:
            raise SystemExit(f"git merge-tree: unexpected result:\n{merged.stdout}{merged.stderr}")
        tree = merged.stdout.split("\n", 1)[0]
        commit = subprocess.run(
            ["git", "commit-tree", tree, "-p", str(head), "-p", str(ticket.commit)],
            cwd=self.path,
            input="Merge ticket\n",
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
        ).stdout.strip()
        return pygit2.Oid(hex=commit), pygit2.Oid(hex=tree)

    def with_pygit2(self, head: pygit2.Oid, ticket: Ticket) -> tuple[pygit2.Oid, pygit2.Oid]:
        index = self.repo.merge_commits(head, ticket.commit)
        if index.conflicts is not None:
            raise SystemExit("pygit2 merge_commits: unexpected conflict")
        tree = index.write_tree(self.repo)
        commit = self.repo.create_commit(
            None, SIG, SIG, "Merge ticket", tree, [head, ticket.commit]
        )
        return commit, tree


def run(files: int, merges: int, seed: int, workdir: Path) -> dict[str, Any]:
    repo_path = workdir / f"repo-{files}-{seed}"
    started = time.perf_counter()
    make_repo(repo_path, files, seed)
    generated_s = time.perf_counter() - started
    repo = pygit2.Repository(str(repo_path))
    base, tickets = make_tickets(repo, files, merges, seed)
    methods = Methods(repo, repo_path, base)
    names = ("gitexec", "git", "pygit2")
    heads = dict.fromkeys(names, base)
    times: dict[str, list[float]] = {name: [] for name in names}
    mismatches = {"git": 0, "pygit2": 0}
    for k, ticket in enumerate(tickets):
        trees = {}
        for name in names[k % 3 :] + names[: k % 3]:  # rotate who goes first (I/O bursts)
            land = getattr(methods, f"with_{name}")
            started = time.perf_counter()
            heads[name], trees[name] = land(heads[name], ticket)
            times[name].append((time.perf_counter() - started) * 1000)
        for other in mismatches:
            mismatches[other] += trees[other] != trees["gitexec"]
    if mismatches["git"]:
        raise SystemExit(f"gitexec and git merge-tree trees differ in {mismatches['git']} merges")
    stats = {
        name: {
            "median_ms": round(statistics.median(values), 3),
            "mean_ms": round(statistics.fmean(values), 3),
        }
        for name, values in times.items()
    }
    ratio = {
        "gitexec/git": round(stats["gitexec"]["median_ms"] / stats["git"]["median_ms"], 3),
        "gitexec/pygit2": round(stats["gitexec"]["median_ms"] / stats["pygit2"]["median_ms"], 3),
    }
    return {
        "files": files,
        "merges": merges,
        "seed": seed,
        "content_merges": sum(t.content_merge for t in tickets),
        "generate_s": round(generated_s, 2),
        "methods": stats,
        "ratios_of_medians": ratio,
        "ratios_of_means": {
            "gitexec/git": round(stats["gitexec"]["mean_ms"] / stats["git"]["mean_ms"], 3),
            "gitexec/pygit2": round(stats["gitexec"]["mean_ms"] / stats["pygit2"]["mean_ms"], 3),
        },
        "identical_trees_gitexec_git": True,
        "trees_differing_from_pygit2": mismatches["pygit2"],
        "versions": {"git": _git_version(), "pygit2": version("pygit2")},
    }


def _git_version() -> str:
    out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def print_table(report: dict[str, Any]) -> None:
    labels = {
        "gitexec": "(1) gitexec merge_trees + commit",
        "git": "(2) git merge-tree + commit-tree",
        "pygit2": "(3) pygit2 merge_commits + commit",
    }
    methods = report["methods"]
    print(
        f"{report['files']} files, {report['merges']} merges "
        f"({report['content_merges']} with a content merge), seed {report['seed']}"
    )
    print(f"{'method':<36}{'median ms':>11}{'mean ms':>10}")
    for name, label in labels.items():
        print(f"{label:<36}{methods[name]['median_ms']:>11.2f}{methods[name]['mean_ms']:>10.2f}")
    medians, means = report["ratios_of_medians"], report["ratios_of_means"]
    print(f"{'ratio (1)/(2)':<36}{medians['gitexec/git']:>11.3f}{means['gitexec/git']:>10.3f}")
    print(
        f"{'ratio (1)/(3)':<36}{medians['gitexec/pygit2']:>11.3f}{means['gitexec/pygit2']:>10.3f}"
    )
    print("trees of (1) and (2): identical at every merge")
    if report["trees_differing_from_pygit2"]:
        print(f"trees of (3) differ in {report['trees_differing_from_pygit2']} merges")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--merges", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the generated repository")
    args = parser.parse_args(argv)
    work = Path(__file__).resolve().parent / ".work"
    work.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-merge-", dir=work))
    try:
        report = run(args.files, args.merges, args.seed, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
