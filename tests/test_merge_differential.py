"""Differential test: gitexec.merge.merge_trees against `git merge-tree --write-tree` (ort).

Seeded random three-way scenarios in families (edits, adds, deletes, renames, rename pairs,
renames across the whole similarity range incl. binary files and decoys, directory renames,
mode changes, binary files, symlinks and submodules, file/directory swaps, identical changes on
both sides, and a mix) are built with pygit2 as base/ours/theirs commits; git runs once per
scenario. The clean-or-conflict verdict must agree, and a clean tree must be the same object.

Every disagreement found so far was fixed, so KNOWN_DISAGREEMENTS is empty. What is known to
differ but not generated here (gitexec reads no git configuration or attributes):
  - .gitattributes merge drivers (merge=union/binary, text/eol renormalisation) and
    $GIT_DIR/info/attributes: git merge-tree may honour them; gitexec's rules replace them.
  - merge.directoryRenames / merge.renames / merge.renameLimit / diff.renames settings: gitexec
    behaves like git's defaults (directory renames reported as conflicts, limit 7000).
  - Submodules whose repository is present: git can fast-forward a gitlink moved on both
    sides; gitexec reports a submodule conflict whenever both sides moved it differently.
  - Conflict marker text (labels, conflict style): only conflicted merges show it.
Run `python -m tests.test_merge_differential 5000` to try more seeds.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pygit2
import pytest

import gitexec.merge as merge_module
from gitexec.merge import merge_trees

SCENARIOS = 600

_REG, _EXEC, _LINK, _GITLINK = 0o100644, 0o100755, 0o120000, 0o160000
_DIRS = ("", "a", "a/b", "c", "c/d/e", "lib")
_NEW_DIRS = ("n", "a/n", "c/d/n", "lib/x/y")
_FAMILIES = (
    "edits",
    "adds",
    "deletes",
    "renames",
    "modes",
    "binary",
    "swaps",
    "links",
    "same",
    "dir_renames",
    "rename_pairs",
    "similarity",
    "mixed",
)

Files = dict[str, tuple[bytes, int]]

# Seeds where gitexec is known to disagree with git, with the scenario kind and the reason.
# A listed seed that starts to agree fails too, so the list cannot go stale.
KNOWN_DISAGREEMENTS: dict[int, str] = {}


@dataclass
class Scenario:
    """A seeded scenario: the three file maps and a log of what each side did."""

    seed: int
    family: str
    base: Files
    ours: Files
    theirs: Files
    log: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"seed={self.seed} family={self.family}: " + "; ".join(self.log)


def _word(rnd: random.Random) -> str:
    return f"w{rnd.randrange(10**6)}"


def _text(rnd: random.Random, lines: int | None = None) -> bytes:
    n = rnd.randint(3, 10) if lines is None else lines
    body = "".join(f"{_word(rnd)} {_word(rnd)}\n" for _ in range(n)).encode()
    flavour = rnd.random()
    if flavour < 0.08:
        body = body.rstrip(b"\n")  # no trailing newline
    elif flavour < 0.14:
        body = body.replace(b"\n", b"\r\n")
    elif flavour < 0.19:
        body = body.replace(b"w", b"\xff\xfe", 1)  # invalid UTF-8
    return body


def _binary(rnd: random.Random) -> bytes:
    return bytes(rnd.randrange(256) for _ in range(rnd.randint(20, 200))) + b"\0" * 3


def _valid(files: Files) -> bool:
    """No path is both a file and a directory."""
    paths = set(files)
    return not any(q in paths for p in paths for q in _ancestors(p))


def _ancestors(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path


def _in_dir(d: str, name: str) -> str:
    return f"{d}/{name}" if d else name


def _edit_lines(rnd: random.Random, data: bytes, where: int | None = None) -> bytes:
    lines = data.split(b"\n")
    i = where if where is not None else rnd.randrange(len(lines))
    i = min(i, len(lines) - 1)
    choice = rnd.random()
    if choice < 0.6:
        lines[i] = _word(rnd).encode() + b" edited"
    elif choice < 0.8:
        lines.insert(i, _word(rnd).encode() + b" inserted")
    else:
        lines.append(_word(rnd).encode() + b" appended")
    return b"\n".join(lines)


class _Side:
    """Applies random operations to one side's copy of the base."""

    def __init__(self, rnd: random.Random, base: Files, name: str, log: list[str]) -> None:
        self.rnd = rnd
        self.files: Files = dict(base)
        self.base = base
        self.name = name
        self.log = log

    def _pick(self, pred: Callable[[bytes, int], bool] = lambda d, m: True) -> str | None:
        options = sorted(p for p, (d, m) in self.files.items() if pred(d, m))
        return self.rnd.choice(options) if options else None

    def _set(self, path: str, data: bytes, mode: int, what: str) -> None:
        trial = dict(self.files)
        trial[path] = (data, mode)
        if _valid(trial):
            self.files = trial
            self.log.append(f"{self.name} {what} {path}")

    def edit(self, where: int | None = None, path: str | None = None) -> None:
        path = path or self._pick(lambda d, m: m in (_REG, _EXEC) and b"\0" not in d[:8000])
        if path and path in self.files and self.files[path][1] in (_REG, _EXEC):
            data, mode = self.files[path]
            self._set(path, _edit_lines(self.rnd, data, where), mode, "edit")

    def add(self, path: str | None = None, data: bytes | None = None) -> None:
        if path is None:
            d = self.rnd.choice(_DIRS + _NEW_DIRS)
            path = _in_dir(d, f"new{self.rnd.randrange(4)}.txt")
        if path not in self.files:
            self._set(path, data if data is not None else _text(self.rnd), _REG, "add")

    def delete(self, path: str | None = None) -> None:
        path = path or self._pick()
        if path and path in self.files:
            del self.files[path]
            self.log.append(f"{self.name} delete {path}")

    def rename(self, edit: bool | None = None, path: str | None = None) -> None:
        path = path or self._pick(lambda d, m: d != b"")
        if not path or path not in self.files:
            return
        data, mode = self.files[path]
        d = self.rnd.choice(_DIRS + _NEW_DIRS)
        name = path.rpartition("/")[2]
        if self.rnd.random() < 0.3:
            name = "moved_" + name
        target = _in_dir(d, name)
        if target == path or target in self.files:
            return
        wanted = edit if edit is not None else self.rnd.random() < 0.5
        if wanted and mode != _LINK and data.count(b"\n") >= 4 and b"\0" not in data:
            data = _edit_lines(self.rnd, data)
        trial = dict(self.files)
        del trial[path]
        trial[target] = (data, mode)
        if _valid(trial):
            self.files = trial
            self.log.append(f"{self.name} rename {path} -> {target}")

    def rewrite_and_move(self, path: str, share: float, target: str) -> None:
        """Move `path` to `target`, rewriting about `share` of it (lines, or bytes if binary)."""
        if path not in self.files or target in self.files:
            return
        data, mode = self.files[path]
        if b"\0" in data[:8000]:
            raw = bytearray(data)
            for _ in range(int(len(raw) * share)):
                raw[self.rnd.randrange(len(raw))] = self.rnd.randrange(256)
            data = bytes(raw)
        else:
            lines = data.split(b"\n")
            for i in range(len(lines)):
                if self.rnd.random() < share:
                    lines[i] = _word(self.rnd).encode() + b" rewritten"
            data = b"\n".join(lines)
        trial = dict(self.files)
        del trial[path]
        trial[target] = (data, mode)
        if _valid(trial):
            self.files = trial
            self.log.append(f"{self.name} move {path} -> {target} rewriting {share:.0%}")

    def chmod(self, path: str | None = None) -> None:
        path = path or self._pick(lambda d, m: m in (_REG, _EXEC))
        if path and path in self.files and self.files[path][1] in (_REG, _EXEC):
            data, mode = self.files[path]
            self._set(path, data, _EXEC if mode == _REG else _REG, "chmod")

    def binary(self, path: str | None = None) -> None:
        path = path or self._pick(lambda d, m: m != _GITLINK and b"\0" in d[:8000])
        if path and path in self.files and self.files[path][1] != _GITLINK:
            data, mode = self.files[path]
            pos = self.rnd.randrange(len(data))
            self._set(path, data[:pos] + bytes([self.rnd.randrange(256)]) + data[pos:], mode, "bin")

    def link(self, path: str | None = None) -> None:
        path = path or self._pick(lambda d, m: m == _LINK)
        if path and path in self.files:
            self._set(path, f"target-{_word(self.rnd)}".encode(), _LINK, "relink")

    def file_to_dir(self) -> None:
        path = self._pick()
        if path:
            trial = dict(self.files)
            del trial[path]
            trial[f"{path}/inner.txt"] = (_text(self.rnd), _REG)
            if _valid(trial):
                self.files = trial
                self.log.append(f"{self.name} file->dir {path}")

    def dir_to_file(self) -> None:
        dirs = sorted({a for p in self.files for a in _ancestors(p)})
        if dirs:
            d = self.rnd.choice(dirs)
            trial = {p: v for p, v in self.files.items() if not p.startswith(d + "/")}
            trial[d] = (_text(self.rnd), _REG)
            if _valid(trial):
                self.files = trial
                self.log.append(f"{self.name} dir->file {d}")

    def move_dir(self, d: str, target: str) -> None:
        """Rename every file below directory `d` to below `target`."""
        moved = {p: v for p, v in self.files.items() if p.startswith(d + "/")}
        trial = {p: v for p, v in self.files.items() if p not in moved}
        for p, v in moved.items():
            trial[target + p[len(d) :]] = v
        if moved and _valid(trial) and len(trial) == len(self.files):
            self.files = trial
            self.log.append(f"{self.name} move-dir {d} -> {target}")

    def gitlink(self) -> None:
        path = self._pick(lambda d, m: m == _GITLINK) or "sub/module"
        fake = bytes(self.rnd.randrange(256) for _ in range(20))
        self._set(path, fake, _GITLINK, "gitlink")


def _one_of(rnd: random.Random, *ops: Callable[..., None]) -> Callable[..., None]:
    return rnd.choice(ops)


def _base_files(rnd: random.Random) -> Files:
    files: Files = {}
    for i in range(rnd.randint(4, 12)):
        path = _in_dir(rnd.choice(_DIRS), f"f{i}.txt")
        kind = rnd.random()
        if kind < 0.08:
            files[path] = (_binary(rnd), _REG)
        elif kind < 0.13:
            files[path] = (b"", _REG)
        elif kind < 0.18:
            files[path] = (f"target-{_word(rnd)}".encode(), _LINK)
        elif kind < 0.25:
            files[path] = (_text(rnd), _EXEC)
        else:
            files[path] = (_text(rnd, rnd.randint(4, 10)), _REG)
    if rnd.random() < 0.1:
        files["sub/module"] = (bytes(rnd.randrange(256) for _ in range(20)), _GITLINK)
    return files


def make_scenario(seed: int) -> Scenario:
    """Build one scenario; its family decides which operations dominate."""
    rnd = random.Random(seed)
    family = _FAMILIES[seed % len(_FAMILIES)]
    base = _base_files(rnd)
    log: list[str] = []
    ours, theirs = _Side(rnd, base, "ours", log), _Side(rnd, base, "theirs", log)
    generic: list[Callable[[_Side], None]] = [
        _Side.edit,
        _Side.add,
        _Side.delete,
        _Side.rename,
        _Side.chmod,
        _Side.binary,
        _Side.link,
        _Side.file_to_dir,
        _Side.dir_to_file,
    ]
    if family == "edits":
        path = ours._pick(lambda d, m: m in (_REG, _EXEC) and b"\0" not in d)
        if path:
            n = base[path][0].count(b"\n")
            ours.edit(rnd.randrange(n + 1), path)
            theirs.edit(rnd.randrange(n + 1), path)
    elif family == "adds":
        path = _in_dir(rnd.choice(_DIRS + _NEW_DIRS), "added.txt")
        data = _text(rnd)
        ours.add(path, data)
        theirs.add(path, data if rnd.random() < 0.4 else _edit_lines(rnd, data))
    elif family == "deletes":
        path = ours._pick()
        if path:
            ours.delete(path)
            _one_of(rnd, theirs.delete, theirs.edit, theirs.chmod)(path=path)
    elif family == "renames":
        path = ours._pick(lambda d, m: d.count(b"\n") >= 4 and b"\0" not in d)
        if path:
            ours.rename(path=path)
            _one_of(rnd, theirs.edit, theirs.rename, theirs.delete, theirs.chmod)(path=path)
    elif family == "modes":
        path = ours._pick(lambda d, m: m in (_REG, _EXEC) and b"\0" not in d)
        if path:
            ours.chmod(path)
            _one_of(rnd, theirs.edit, theirs.chmod)(path=path)
    elif family == "binary":
        path = "blob.bin"
        base[path] = (_binary(rnd), _REG)
        ours.files[path] = theirs.files[path] = base[path]
        ours.binary(path)
        _one_of(rnd, theirs.binary, theirs.delete, theirs.chmod)(path=path)
    elif family == "swaps":
        _one_of(rnd, ours.file_to_dir, ours.dir_to_file)()
        _one_of(rnd, theirs.edit, theirs.add, theirs.file_to_dir, theirs.dir_to_file)()
    elif family == "links":
        _one_of(rnd, ours.link, ours.gitlink)()
        _one_of(rnd, theirs.link, theirs.gitlink, theirs.delete)()
    elif family == "dir_renames":
        dirs = sorted({a for p in base for a in _ancestors(p)})
        if dirs:
            d = rnd.choice(dirs)
            ours.move_dir(d, rnd.choice(["moved", "c/moved", d + "_new", "lib/x"]))
            inside = sorted(p for p in base if p.startswith(d + "/"))
            choice = rnd.random()
            if choice < 0.35:
                theirs.add(f"{d}/fresh.txt")
            elif choice < 0.5:
                theirs.add(f"{d}/newsub/fresh.txt")
            elif choice < 0.7 and inside:
                theirs.edit(path=rnd.choice(inside))
            elif choice < 0.85:
                other = theirs._pick(lambda dd, m: dd != b"")
                if other and not other.startswith(d + "/"):
                    data, mode = theirs.files[other]
                    trial = dict(theirs.files)
                    del trial[other]
                    trial[f"{d}/{other.rpartition('/')[2]}"] = (data, mode)
                    if _valid(trial):
                        theirs.files = trial
                        log.append(f"theirs rename {other} into {d}")
            else:
                theirs.move_dir(d, rnd.choice(["moved", "elsewhere"]))
    elif family == "rename_pairs":
        path = ours._pick(lambda d, m: d.count(b"\n") >= 4 and b"\0" not in d)
        if path:
            ours.rename(path=path)
            choice = rnd.random()
            if choice < 0.3:
                theirs.rename(path=path)  # rename/rename, same or different target
            elif choice < 0.5:
                theirs.delete(path)
                if rnd.random() < 0.5:
                    theirs.add(data=_edit_lines(rnd, base[path][0]))  # similar add elsewhere
            elif choice < 0.7:
                target = next((p for p in ours.files if p not in base), None)
                if target:
                    theirs.add(target)  # rename/add
            else:
                theirs.edit(path=path)
                theirs.chmod(path)
    elif family == "similarity":
        # Renames anywhere between unrelated and identical, same or other basename, text or
        # binary, sometimes with a look-alike decoy, so similarity scores cross 50% and 75%.
        path = ours._pick(lambda d, m: m in (_REG, _EXEC) and len(d) > 0)
        if path:
            name = path.rpartition("/")[2]
            target = _in_dir(rnd.choice(_NEW_DIRS), rnd.choice([name, "other_" + name]))
            ours.rewrite_and_move(path, rnd.choice([0.0, 0.1, 0.3, 0.45, 0.55, 0.7, 0.9]), target)
            if rnd.random() < 0.3:
                decoy = _in_dir(rnd.choice(_NEW_DIRS), "decoy_" + name)
                ours.add(decoy, _edit_lines(rnd, base[path][0]))
            _one_of(rnd, theirs.edit, theirs.chmod, theirs.delete, theirs.binary)(path=path)
    elif family == "same":
        op = rnd.choice(generic)
        state = rnd.getstate()
        op(ours)
        rnd.setstate(state)
        op(theirs)
    for side in (ours, theirs):
        for _ in range(rnd.randint(0, 3 if family == "mixed" else 1)):
            rnd.choice(generic)(side)
    return Scenario(seed, family, base, ours.files, theirs.files, log)


def _write(repo: pygit2.Repository, files: Files) -> pygit2.Oid:
    """Build a tree from a path map with TreeBuilder (independent of the code under test)."""
    top: dict[str, object] = {}
    for path, (data, mode) in files.items():
        node = top
        *dirs, name = path.split("/")
        for d in dirs:
            child = node.setdefault(d, {})
            assert isinstance(child, dict)
            node = child
        oid = pygit2.Oid(raw=data) if mode == _GITLINK else repo.create_blob(data)
        node[name] = (oid, mode)

    def build(node: dict[str, object]) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for name, value in node.items():
            if isinstance(value, dict):
                builder.insert(name, build(value), pygit2.GIT_FILEMODE_TREE)
            else:
                assert isinstance(value, tuple)
                builder.insert(name, value[0], value[1])
        return builder.write()

    return build(top)


@pytest.fixture(scope="module")
def bare_repo(tmp_path_factory: pytest.TempPathFactory) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path_factory.mktemp("differential") / "r.git"), True)


def _git_merge_tree(repo: pygit2.Repository, ours: pygit2.Oid, theirs: pygit2.Oid) -> str | None:
    """The tree git writes for a clean merge, or None when git reports conflicts."""
    proc = subprocess.run(
        ["git", "merge-tree", "--write-tree", "--no-messages", str(ours), str(theirs)],
        cwd=repo.path,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise AssertionError(f"git merge-tree failed: {proc.stderr}")
    return proc.stdout.split("\n", 1)[0] if proc.returncode == 0 else None


def run_scenario(repo: pygit2.Repository, scenario: Scenario) -> tuple[str | None, str | None]:
    """(git's clean tree or None, gitexec's clean tree or None) for one scenario."""
    sig = pygit2.Signature("t", "t@example.com", 1_700_000_000, 0)
    trees = [_write(repo, f) for f in (scenario.base, scenario.ours, scenario.theirs)]
    base = repo.create_commit(None, sig, sig, "base", trees[0], [])
    ours = repo.create_commit(None, sig, sig, "ours", trees[1], [base])
    theirs = repo.create_commit(None, sig, sig, "theirs", trees[2], [base])
    expected = _git_merge_tree(repo, ours, theirs)
    result = merge_trees(repo, trees[0], trees[1], trees[2])
    got = str(result.tree) if result.clean else None
    return expected, got


@pytest.mark.parametrize("seed", range(SCENARIOS))
def test_matches_git_merge_tree(bare_repo: pygit2.Repository, seed: int) -> None:
    scenario = make_scenario(seed)
    expected, got = run_scenario(bare_repo, scenario)
    agree = expected == got
    if seed in KNOWN_DISAGREEMENTS:
        assert not agree, f"known disagreement now agrees, drop it: {scenario.describe()}"
        pytest.xfail(KNOWN_DISAGREEMENTS[seed])
    verdicts = f"git={'clean ' + expected if expected else 'conflict'}, " + (
        f"gitexec={'clean ' + got if got else 'conflict'}"
    )
    assert agree, f"{verdicts}\n{scenario.describe()}"


def test_similarity_estimate_matches_git(bare_repo: pygit2.Repository) -> None:
    """gitexec's port of git's rename similarity agrees with `git diff-tree -M50%` pair by pair.

    (libgit2's find_similar, the obvious alternative, disagrees with git on a few percent of
    such pairs near the threshold and on many binary ones.)
    """
    rnd = random.Random(2039)
    merger = merge_module._Merger(
        bare_repo, merge_module._Trees(bare_repo), (), ("o", "b", "t"), True
    )
    disagreements = []
    for trial in range(120):
        binary = trial % 3 == 0
        old = _binary(rnd) * rnd.randint(1, 8) if binary else _text(rnd, rnd.randint(1, 25))
        raw = bytearray(old)
        for _ in range(int(len(raw) * rnd.choice([0.002, 0.005, 0.01, 0.02, 0.04, 0.08]))):
            raw[rnd.randrange(len(raw))] = rnd.choice(b"ab\n\r\0")
        new = bytes(raw) + (b"tail\n" if rnd.random() < 0.3 else b"")
        if new == old:
            continue
        a, b = bare_repo.create_blob(old), bare_repo.create_blob(new)
        ta, tb = _write(bare_repo, {"old": (old, _REG)}), _write(bare_repo, {"new": (new, _REG)})
        proc = subprocess.run(
            ["git", "diff-tree", "-r", "-M50%", "--name-status", str(ta), str(tb)],
            cwd=bare_repo.path,
            capture_output=True,
            text=True,
            check=True,
        )
        git_says = proc.stdout.startswith("R")
        score = merger.similarity((a, _REG), (b, _REG), merge_module._MIN_SCORE)
        if (score >= merge_module._MIN_SCORE) != git_says:
            disagreements.append((trial, score, git_says))
    assert disagreements == []


def test_families_are_all_exercised() -> None:
    """The seeds cover every scenario family."""
    seen = {make_scenario(seed).family for seed in range(SCENARIOS)}
    assert seen == set(_FAMILIES)


def main() -> None:  # pragma: no cover - a debugging aid: python tests/test_merge_differential.py
    import sys
    import tempfile

    count = int(sys.argv[1]) if len(sys.argv) > 1 else SCENARIOS
    with tempfile.TemporaryDirectory() as tmp:
        repo = pygit2.init_repository(str(Path(tmp) / "r.git"), True)
        bad = 0
        for seed in range(count):
            scenario = make_scenario(seed)
            expected, got = run_scenario(repo, scenario)
            if expected != got:
                bad += 1
                print(f"DISAGREE git={expected} gitexec={got}\n  {scenario.describe()}")
        print(f"{bad} disagreements in {count} scenarios")


if __name__ == "__main__":  # pragma: no cover
    main()
