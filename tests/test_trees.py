"""The shared tree cache and the tree-builder path updates (gitexec.treecache, treewrite):
entries read exactly as libgit2 reports them, a bounded cache, updates equal to a full
rebuild, and runs that read the ticket directory a bounded number of times."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path

import pygit2
import pytest

import gitexec.treecache as treecache
from gitexec.merge import update_tree
from gitexec.treecache import TREES, TreeCache, lookup, read_entries, walk_files
from gitexec.treewrite import TreeWriter
from tests.project import gitexec, make_project, ticket_yaml

REG, EXEC, LINK, GITLINK, TREE = 0o100644, 0o100755, 0o120000, 0o160000, 0o040000


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "repo"), bare=True)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    TREES.clear()
    yield
    TREES.clear()


def full_tree(repo: pygit2.Repository, files: Mapping[str, tuple[pygit2.Oid, int]]) -> pygit2.Oid:
    """The tree holding exactly `files`, built from nothing by libgit2's index."""
    index = pygit2.Index()
    for path, (oid, mode) in files.items():
        index.add(pygit2.IndexEntry(path, oid, pygit2.enums.FileMode(mode)))
    return index.write_tree(repo)


def libgit2_entries(
    repo: pygit2.Repository, oid: pygit2.Oid
) -> dict[bytes, tuple[pygit2.Oid, int]]:
    tree = repo[oid]
    assert isinstance(tree, pygit2.Tree)
    return {e.raw_name or b"": (e.id, int(e.filemode)) for e in tree}


# -- reading ------------------------------------------------------------------------------------


def test_entries_read_as_libgit2_reports_them(repo: pygit2.Repository) -> None:
    blob = repo.create_blob(b"x\n")
    sub = full_tree(repo, {"inner": (blob, REG)})
    # Written raw: an old-style 100664 mode and a non-UTF-8 name, which git accepts.
    raw = b"".join(
        mode + b" " + name + b"\0" + oid.raw
        for mode, name, oid in sorted(
            [
                (b"100644", b"a.txt", blob),
                (b"100755", b"run.sh", blob),
                (b"120000", b"link", blob),
                (b"160000", b"module", blob),
                (b"40000", b"dir", sub),
                (b"100664", b"legacy", blob),
                (b"100644", b"caf\xe9", blob),
            ],
            key=lambda e: e[1] + (b"/" if e[0] == b"40000" else b""),
        )
    )
    tree = repo.odb.write(pygit2.GIT_OBJECT_TREE, raw)
    assert read_entries(repo, tree) == libgit2_entries(repo, tree)
    assert read_entries(repo, tree)[b"legacy"][1] == REG
    with pytest.raises(ValueError, match="not a tree"):
        read_entries(repo, blob)


def test_lookup_and_walk(repo: pygit2.Repository) -> None:
    blob = repo.create_blob(b"x\n")
    tree = full_tree(repo, {"a/b/c.txt": (blob, REG), "a/l": (blob, LINK), "top": (blob, EXEC)})
    assert lookup(repo, tree, "a/b/c.txt") == (blob, REG)
    assert lookup(repo, tree, "a/b") is not None and lookup(repo, tree, "a/b")[1] == TREE  # type: ignore[index]
    for missing in ("a/x", "top/below", "a//b", "", "a/b/", "a/l/c.txt"):
        assert lookup(repo, tree, missing) is None, missing
    assert sorted(walk_files(repo, tree)) == ["a/b/c.txt", "a/l", "top"]


# -- the cache ------------------------------------------------------------------------------------


def test_cache_is_bounded_by_entries_and_least_recently_used(repo: pygit2.Repository) -> None:
    cache = TreeCache(max_entries=10)
    blob = repo.create_blob(b"x\n")
    trees = [full_tree(repo, {f"f{i}-{k}": (blob, REG) for k in range(4)}) for i in range(5)]
    for t in trees[:2]:
        cache.entries(repo, t)
    assert (len(cache), cache.size) == (2, 8)
    cache.get(trees[0])  # now the most recently used
    cache.entries(repo, trees[2])
    assert cache.get(trees[1]) is None  # evicted: 12 entries > 10
    assert cache.get(trees[0]) is not None and cache.size == 8
    for t in trees:
        cache.entries(repo, t)
        assert cache.size <= 10
    big = full_tree(repo, {f"g{k}": (blob, REG) for k in range(25)})
    cache.entries(repo, big)
    assert (len(cache), cache.size) == (1, 25)  # larger than the bound: kept, alone


def test_a_tree_is_parsed_once(repo: pygit2.Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[pygit2.Oid] = []
    original = treecache.read_entries

    def counting(r: pygit2.Repository, oid: pygit2.Oid) -> dict[bytes, tuple[pygit2.Oid, int]]:
        reads.append(oid)
        return original(r, oid)

    monkeypatch.setattr(treecache, "read_entries", counting)
    blob = repo.create_blob(b"x\n")
    tree = full_tree(repo, {f"t/{i}.yaml": (blob, REG) for i in range(50)})
    for i in range(50):
        assert lookup(repo, tree, f"t/{i}.yaml") == (blob, REG)
    assert len(reads) == 2  # the root and t/


# -- updates ------------------------------------------------------------------------------------


def test_updates_equal_a_full_rebuild(repo: pygit2.Repository) -> None:
    """Random files, random writes and removals, each update against the tree built from
    nothing with the same files; the builder kept from one update is reused by the next."""
    rng = random.Random(14)
    blobs = [repo.create_blob(f"{i}\n".encode()) for i in range(6)]
    names = ["a", "b", "c.yaml", "d"]

    def random_path() -> str:
        return "/".join(rng.choice(names) for _ in range(rng.randint(1, 3)))

    files: dict[str, tuple[pygit2.Oid, int]] = {}
    for _ in range(30):
        path = random_path()
        if not any(p.startswith(path + "/") or path.startswith(p + "/") for p in files):
            files[path] = (rng.choice(blobs), REG)
    writer = TreeWriter(repo)
    tree: pygit2.Oid | None = full_tree(repo, files)
    for step in range(120):
        changes: dict[str, tuple[pygit2.Oid, int] | None] = {}
        for _ in range(rng.randint(1, 3)):
            path = random_path()
            if any(p.startswith(path + "/") or path.startswith(p + "/") for p in changes):
                continue
            changes[path] = (
                None if rng.random() < 0.3 else (rng.choice(blobs), rng.choice((REG, EXEC, LINK)))
            )
        if step % 3 == 0 and tree is not None:
            TREES.entries(repo, tree)  # cached: the update derives the new tree's entries
        tree = writer.update(tree, changes)
        # What the update means: a written file replaces a file or directory at its path and
        # removes files it is now a directory for; removals of missing paths do nothing.
        for path, entry in changes.items():
            files = {p: e for p, e in files.items() if not p.startswith(path + "/")}
            if entry is None:
                files.pop(path, None)
            else:
                files = {p: e for p, e in files.items() if not path.startswith(p + "/")}
                files[path] = entry
        expected = full_tree(repo, files) if files else None
        assert tree == expected, (step, changes)
        if tree is not None:
            cached = TREES.get(tree)
            if cached is not None:
                assert dict(cached) == read_entries(repo, tree)


def test_update_tree_through_a_kept_writer(repo: pygit2.Repository) -> None:
    blob = repo.create_blob(b"x\n")
    tickets = {f".gitexec/tickets/T{i:04d}.yaml": (blob, REG) for i in range(300)}
    tree = full_tree(repo, {**tickets, "src/main.py": (blob, REG)})
    writer = TreeWriter(repo)
    head = tree
    for i in range(0, 300, 7):
        path = f".gitexec/tickets/T{i:04d}.yaml"
        head = update_tree(repo, head, {path: (f"done {i}\n".encode(), REG)}, writer=writer)
        tickets[path] = (repo.create_blob(f"done {i}\n".encode()), REG)
    assert head == full_tree(repo, {**tickets, "src/main.py": (blob, REG)})


# -- runs -------------------------------------------------------------------------------------------


@pytest.fixture
def ticket_dir_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every tree of 40 entries or more that is parsed."""
    sizes: list[int] = []
    original = treecache.read_entries

    def counting(r: pygit2.Repository, oid: pygit2.Oid) -> dict[bytes, tuple[pygit2.Oid, int]]:
        found = original(r, oid)
        if len(found) >= 40:
            sizes.append(len(found))
        return found

    monkeypatch.setattr(treecache, "read_entries", counting)
    return sizes


def test_dry_run_reads_the_ticket_directory_once(
    tmp_path: Path, ticket_dir_reads: list[int]
) -> None:
    repo = make_project(
        tmp_path / "r", {f"T{i:03d}": ticket_yaml(f"T{i:03d}", run="true") for i in range(120)}
    )
    code, out, err = gitexec(repo, "run", "--dry-run", "--jobs", "2")
    assert code == 0, err
    assert "T119" in out
    assert ticket_dir_reads == [120]


def test_a_run_reads_the_ticket_directory_a_bounded_number_of_times(
    tmp_path: Path, ticket_dir_reads: list[int]
) -> None:
    """Each ticket's merge, status write-back and slot reset ask about the ticket directory;
    they share what was read (or written) before instead of parsing it per ticket."""
    config = "version: 1\ndefault_agent: shell\n"
    n = 60
    repo = make_project(
        tmp_path / "r",
        {f"T{i:03d}": ticket_yaml(f"T{i:03d}", run="true") for i in range(n)},
        config=config,
    )
    code, _, err = gitexec(repo, "run", "--no-monitor", "--jobs", "2", "--run-id", "r1")
    assert code == 0, err
    code, out, err = gitexec(repo, "status", "--run", "r1", "--format", "json")
    assert code == 0, err
    tickets = json.loads(out)["tickets"]
    states = [t["status"] for t in (tickets.values() if isinstance(tickets, dict) else tickets)]
    assert states == ["completed"] * n
    assert len(ticket_dir_reads) <= 4, ticket_dir_reads
