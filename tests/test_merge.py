"""Focused tests for gitexec.merge: each merge case, rules, the O(changes) shortcut, helpers."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pygit2
import pytest

import gitexec.merge as merge_module
from gitexec.merge import (
    ConflictKind,
    MergeResult,
    MergeRule,
    RuleStrategy,
    changed_paths,
    merge_trees,
    update_tree,
)

REG, EXEC, LINK, GITLINK = 0o100644, 0o100755, 0o120000, 0o160000
SIG = pygit2.Signature("Test User", "test@example.com", 1_767_225_600, 0)

Spec = Mapping[str, "bytes | str | tuple[bytes | str, int]"]


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    """A bare repository (overrides conftest's `repo`: merges need no work tree)."""
    return pygit2.init_repository(str(tmp_path / "repo"), bare=True)


def build(repo: pygit2.Repository, files: Spec) -> pygit2.Oid:
    """A tree from {path: content | (content, mode)}, built with TreeBuilder."""
    root: dict[str, object] = {}
    for path, spec in files.items():
        data, mode = spec if isinstance(spec, tuple) else (spec, REG)
        raw = data.encode() if isinstance(data, str) else data
        *dirs, name = path.split("/")
        node = root
        for d in dirs:
            child = node.setdefault(d, {})
            assert isinstance(child, dict)
            node = child
        oid = pygit2.Oid(raw=raw) if mode == GITLINK else repo.create_blob(raw)
        node[name] = (oid, mode)

    def write(node: dict[str, object]) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for name, value in node.items():
            if isinstance(value, dict):
                builder.insert(name, write(value), pygit2.GIT_FILEMODE_TREE)
            else:
                assert isinstance(value, tuple)
                builder.insert(name, value[0], value[1])
        return builder.write()

    return write(root)


def read(repo: pygit2.Repository, tree: pygit2.Oid | None, path: str) -> bytes:
    assert tree is not None
    obj = repo[tree]
    assert isinstance(obj, pygit2.Tree)
    blob = obj[path]
    assert isinstance(blob, pygit2.Blob)
    return blob.data


def mode_of(repo: pygit2.Repository, tree: pygit2.Oid | None, path: str) -> int:
    assert tree is not None
    obj = repo[tree]
    assert isinstance(obj, pygit2.Tree)
    return int(obj[path].filemode)


def paths_of(repo: pygit2.Repository, tree: pygit2.Oid | None) -> set[str]:
    return set(changed_paths(repo, None, tree)) if tree is not None else set()


def git_merge_tree(
    repo: pygit2.Repository, base: pygit2.Oid, ours: pygit2.Oid, theirs: pygit2.Oid
) -> str | None:
    """git's tree for the same merge (commits with `base` as merge base), None on conflict."""
    b = repo.create_commit(None, SIG, SIG, "base", base, [])
    o = repo.create_commit(None, SIG, SIG, "ours", ours, [b])
    t = repo.create_commit(None, SIG, SIG, "theirs", theirs, [b])
    proc = subprocess.run(
        ["git", "merge-tree", "--write-tree", "--no-messages", str(o), str(t)],
        cwd=repo.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.split("\n", 1)[0] if proc.returncode == 0 else None


def merge(
    repo: pygit2.Repository,
    base: Spec | None,
    ours: Spec,
    theirs: Spec,
    *,
    rules: Sequence[MergeRule] = (),
    labels: tuple[str, str, str] = ("ours", "base", "theirs"),
    detect_renames: bool = True,
) -> MergeResult:
    b = build(repo, base) if base is not None else None
    return merge_trees(
        repo,
        b,
        build(repo, ours),
        build(repo, theirs),
        rules=rules,
        labels=labels,
        detect_renames=detect_renames,
    )


def assert_like_git(repo: pygit2.Repository, base: Spec, ours: Spec, theirs: Spec) -> MergeResult:
    """Merge, and check the verdict and tree against git merge-tree."""
    b, o, t = build(repo, base), build(repo, ours), build(repo, theirs)
    result = merge_trees(repo, b, o, t)
    expected = git_merge_tree(repo, b, o, t)
    assert (str(result.tree) if result.clean else None) == expected, result.conflicts
    return result


LINES = "".join(f"line {i}\n" for i in range(10))


def edit(text: str, line: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[line] = new + "\n"
    return "".join(lines)


# -- clean merges -----------------------------------------------------------------------------


def test_edits_on_different_lines_merge(repo: pygit2.Repository) -> None:
    result = assert_like_git(
        repo,
        {"a.txt": LINES, "b.txt": "b\n"},
        {"a.txt": edit(LINES, 1, "ours"), "b.txt": "b\n"},
        {"a.txt": edit(LINES, 8, "theirs"), "b.txt": "b\n"},
    )
    assert result.clean
    assert read(repo, result.tree, "a.txt") == edit(edit(LINES, 1, "ours"), 8, "theirs").encode()


def test_adds_and_deletes_on_either_side(repo: pygit2.Repository) -> None:
    result = assert_like_git(
        repo,
        {"keep": "k\n", "gone": "g\n", "dir/x": "x\n"},
        {"keep": "k\n", "dir/x": "x\n", "ours-new": "o\n"},
        {"keep": "k\n", "gone": "g\n", "theirs/new": "t\n"},
    )
    assert paths_of(repo, result.tree) == {"keep", "ours-new", "theirs/new"}


def test_identical_adds_are_clean_and_different_adds_conflict(repo: pygit2.Repository) -> None:
    same = merge(repo, {"r": "r\n"}, {"r": "r\n", "n": "same\n"}, {"r": "r\n", "n": "same\n"})
    assert same.clean
    differ = merge(repo, {"r": "r\n"}, {"r": "r\n", "n": "one\n"}, {"r": "r\n", "n": "two\n"})
    assert not differ.clean
    assert differ.tree is None
    (conflict,) = differ.conflicts
    assert conflict.kind is ConflictKind.ADD_ADD
    assert conflict.path == "n"
    assert conflict.text is not None
    assert conflict.text == "<<<<<<< ours\none\n||||||| base\n=======\ntwo\n>>>>>>> theirs\n"


def test_content_conflict_has_diff3_markers_with_labels(repo: pygit2.Repository) -> None:
    result = merge(
        repo,
        {"f": LINES},
        {"f": edit(LINES, 4, "integration")},
        {"f": edit(LINES, 4, "ticket")},
        labels=("gitexec/run1", "base", "T-1"),
    )
    (conflict,) = result.conflicts
    assert conflict.kind is ConflictKind.CONTENT
    assert conflict.text is not None
    assert (
        "<<<<<<< gitexec/run1\nintegration\n||||||| base\nline 4\n=======\nticket\n>>>>>>> T-1\n"
        in conflict.text
    )
    assert "gitexec/run1" in conflict.message or "f" in conflict.message


def test_modify_delete_conflicts_and_delete_delete_is_clean(repo: pygit2.Repository) -> None:
    base = {"f": LINES, "g": "g\n"}
    result = merge(repo, base, {"g": "g\n"}, {"f": edit(LINES, 2, "changed"), "g": "g\n"})
    (conflict,) = result.conflicts
    assert (conflict.kind, conflict.path, conflict.text) == (
        ConflictKind.MODIFY_DELETE,
        "f",
        None,
    )
    both = assert_like_git(repo, base, {"g": "g\n"}, {"g": "g\n"})
    assert both.clean
    assert paths_of(repo, both.tree) == {"g"}


def test_nested_directories_merge_and_keep_untouched_subtrees(repo: pygit2.Repository) -> None:
    base = {"src/a/deep/x.py": LINES, "src/b/y.py": "y\n", "docs/index.md": "d\n"}
    ours = dict(base, **{"src/a/deep/x.py": edit(LINES, 0, "ours"), "src/c/new.py": "n\n"})
    theirs = dict(base, **{"src/a/deep/x.py": edit(LINES, 9, "theirs")})
    del theirs["src/b/y.py"]
    result = assert_like_git(repo, base, ours, theirs)
    assert paths_of(repo, result.tree) == {"src/a/deep/x.py", "src/c/new.py", "docs/index.md"}
    assert result.tree is not None
    merged, original = repo[result.tree], repo[build(repo, base)]
    assert isinstance(merged, pygit2.Tree)
    assert isinstance(original, pygit2.Tree)
    assert merged["docs"].id == original["docs"].id


def test_directory_emptied_on_one_side_disappears(repo: pygit2.Repository) -> None:
    result = assert_like_git(
        repo, {"d/only": "x\n", "r": "r\n"}, {"r": "r\n"}, {"d/only": "x\n", "r": "R\n"}
    )
    assert paths_of(repo, result.tree) == {"r"}


# -- the O(changed paths) shortcut -------------------------------------------------------------


@pytest.fixture
def tree_reads(monkeypatch: pytest.MonkeyPatch) -> list[pygit2.Oid]:
    """Record every tree object the merge code reads."""
    reads: list[pygit2.Oid] = []
    original = merge_module._read_tree

    def counting(
        repo: pygit2.Repository, oid: pygit2.Oid
    ) -> Mapping[bytes, tuple[pygit2.Oid, int]]:
        reads.append(oid)
        return original(repo, oid)

    monkeypatch.setattr(merge_module, "_read_tree", counting)
    return reads


def test_subtrees_equal_by_id_are_never_read(
    repo: pygit2.Repository, tree_reads: list[pygit2.Oid]
) -> None:
    vendor = {f"vendor/lib{i // 25}/f{i}.c": f"{i}\n" for i in range(250)}
    base = dict(vendor, **{"src/app.py": LINES, "docs/a.md": "a\n", "docs/b.md": "b\n"})
    ours = dict(base, **{"src/app.py": edit(LINES, 0, "ours"), "docs/a.md": "A\n"})
    theirs = dict(base, **{"src/app.py": edit(LINES, 9, "theirs")})
    b, o, t = build(repo, base), build(repo, ours), build(repo, theirs)
    tree_reads.clear()
    result = merge_trees(repo, b, o, t)
    assert result.clean
    base_tree = repo[b]
    assert isinstance(base_tree, pygit2.Tree)
    vendor_id, docs_id = base_tree["vendor"].id, base_tree["docs"].id
    # Read: the three roots and the three versions of src/ (changed on both sides). Not read:
    # vendor/ (equal everywhere) and docs/ (changed on one side only: taken whole).
    assert len(tree_reads) == 6
    assert vendor_id not in tree_reads
    assert docs_id not in tree_reads
    ours_tree = repo[o]
    assert isinstance(ours_tree, pygit2.Tree)
    assert ours_tree["docs"].id not in tree_reads


def test_one_sided_subtree_changes_are_taken_whole(
    repo: pygit2.Repository, tree_reads: list[pygit2.Oid]
) -> None:
    base = {f"big/{i}.txt": f"{i}\n" for i in range(100)} | {"small/x": "x\n"}
    ours = dict(base, **{"big/7.txt": "seven\n"})
    theirs = dict(base, **{"small/x": "X\n"})
    b, o, t = build(repo, base), build(repo, ours), build(repo, theirs)
    tree_reads.clear()
    result = merge_trees(repo, b, o, t)
    assert set(tree_reads) == {b, o, t}  # only the roots
    assert read(repo, result.tree, "big/7.txt") == b"seven\n"
    assert read(repo, result.tree, "small/x") == b"X\n"


# -- modes, symlinks, submodules, binary files, file/directory ---------------------------------


def test_exec_bit_on_one_side_and_edit_on_the_other(repo: pygit2.Repository) -> None:
    result = assert_like_git(
        repo,
        {"run.sh": LINES},
        {"run.sh": (LINES, EXEC)},
        {"run.sh": edit(LINES, 3, "echo changed")},
    )
    assert mode_of(repo, result.tree, "run.sh") == EXEC
    assert read(repo, result.tree, "run.sh") == edit(LINES, 3, "echo changed").encode()


def test_exec_bit_and_edit_on_both_sides(repo: pygit2.Repository) -> None:
    result = assert_like_git(
        repo,
        {"run.sh": LINES},
        {"run.sh": (edit(LINES, 0, "first"), EXEC)},
        {"run.sh": edit(LINES, 9, "last")},
    )
    assert mode_of(repo, result.tree, "run.sh") == EXEC
    assert read(repo, result.tree, "run.sh").startswith(b"first\n")


def test_conflicting_modes_conflict(repo: pygit2.Repository) -> None:
    result = merge(
        repo, {"r": "r\n"}, {"r": "r\n", "n": ("same\n", EXEC)}, {"r": "r\n", "n": "same\n"}
    )
    (conflict,) = result.conflicts
    assert conflict.kind is ConflictKind.MODE
    assert conflict.text is None


def test_symlink_changed_on_one_side(repo: pygit2.Repository) -> None:
    result = assert_like_git(
        repo,
        {"link": ("target/a", LINK), "f": "f\n"},
        {"link": ("target/b", LINK), "f": "f\n"},
        {"link": ("target/a", LINK), "f": "F\n"},
    )
    assert mode_of(repo, result.tree, "link") == LINK
    assert read(repo, result.tree, "link") == b"target/b"


def test_symlinks_are_never_content_merged(repo: pygit2.Repository) -> None:
    # As text these would merge cleanly (different lines); as symlinks they conflict.
    base = "one\ntwo\nthree\nfour\n"
    result = merge(
        repo,
        {"link": (base, LINK)},
        {"link": (edit(base, 0, "ONE"), LINK)},
        {"link": (edit(base, 3, "FOUR"), LINK)},
    )
    (conflict,) = result.conflicts
    assert conflict.kind is ConflictKind.CONTENT
    assert conflict.text is None
    assert "symlink" in conflict.message


def test_file_and_symlink_at_one_path_conflict(repo: pygit2.Repository) -> None:
    result = merge(repo, {"r": "r\n"}, {"r": "r\n", "p": "file\n"}, {"r": "r\n", "p": ("x", LINK)})
    (conflict,) = result.conflicts
    assert conflict.kind is ConflictKind.MODE


def test_submodules(repo: pygit2.Repository) -> None:
    one, two, three = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
    moved = assert_like_git(
        repo,
        {"sub": (one, GITLINK), "f": "f\n"},
        {"sub": (two, GITLINK), "f": "f\n"},
        {"sub": (one, GITLINK), "f": "F\n"},
    )
    assert moved.clean
    both = merge(repo, {"sub": (one, GITLINK)}, {"sub": (two, GITLINK)}, {"sub": (three, GITLINK)})
    (conflict,) = both.conflicts
    assert conflict.kind is ConflictKind.SUBMODULE


def test_binary_changed_on_both_sides_conflicts_without_corrupting(
    repo: pygit2.Repository,
) -> None:
    base = b"\x89PNG\0\0" + bytes(range(256)) * 4
    ours, theirs = base + b"ours", b"theirs" + base
    result = merge(repo, {"img.png": base}, {"img.png": ours}, {"img.png": theirs})
    (conflict,) = result.conflicts
    assert conflict.kind is ConflictKind.BINARY
    assert conflict.text is None
    assert result.tree is None
    assert (
        git_merge_tree(repo, *(build(repo, {"img.png": d}) for d in (base, ours, theirs))) is None
    )


def test_binary_changed_on_one_side_is_taken(repo: pygit2.Repository) -> None:
    base = b"\0bin" * 100
    result = assert_like_git(
        repo,
        {"b.bin": base, "t": "t\n"},
        {"b.bin": base + b"\0more", "t": "t\n"},
        {"b.bin": base, "t": "T\n"},
    )
    assert read(repo, result.tree, "b.bin") == base + b"\0more"


def test_file_directory_conflict(repo: pygit2.Repository) -> None:
    result = merge(repo, {"r": "r\n"}, {"r": "r\n", "p": "file\n"}, {"r": "r\n", "p/inner": "x\n"})
    assert [c.kind for c in result.conflicts] == [ConflictKind.FILE_DIRECTORY]
    assert result.conflicts[0].path == "p"


def test_file_replaced_by_directory_on_one_side(repo: pygit2.Repository) -> None:
    result = assert_like_git(
        repo,
        {"p": "file\n", "r": "r\n"},
        {"p/inner": "x\n", "r": "r\n"},
        {"p": "file\n", "r": "R\n"},
    )
    assert paths_of(repo, result.tree) == {"p/inner", "r"}


def test_odd_content_never_raises(repo: pygit2.Repository) -> None:
    base = b"caf\xe9\r\nline\r\nend"
    ours = b"caf\xe9\r\nLINE\r\nend"
    theirs = b"caf\xe9\r\nl\xffne\r\nend"
    result = merge(
        repo,
        {"latin1.txt": base, "empty": b"", "nonl": b"a\nb"},
        {"latin1.txt": ours, "empty": b"x\n", "nonl": b"a\nB"},
        {"latin1.txt": theirs, "empty": b"y\n", "nonl": b"A\nb"},
    )
    kinds = {c.path: c.kind for c in result.conflicts}
    assert kinds == dict.fromkeys(["empty", "latin1.txt", "nonl"], ConflictKind.CONTENT)
    texts = {c.path: c.text or "" for c in result.conflicts}
    assert "caf\ufffd\r\n<<<<<<< ours\r\nLINE\r\n" in texts["latin1.txt"]
    assert texts["nonl"].startswith("<<<<<<< ours\na\nB\n")
    clean = assert_like_git(
        repo,
        {"e": b"", "n": b"1\n2\n3\n4"},
        {"e": b"", "n": b"1\n2\n3\n4!", "x": b"1"},
        {"e": b"\xff\xfe\n", "n": b"1!\n2\n3\n4"},
    )
    assert read(repo, clean.tree, "n") == b"1!\n2\n3\n4!"


# -- renames -----------------------------------------------------------------------------------


def test_rename_on_one_side_edit_on_the_other(repo: pygit2.Repository) -> None:
    base = {"old/name.py": LINES, "r": "r\n"}
    result = assert_like_git(
        repo,
        base,
        {"new/name.py": LINES, "r": "r\n"},
        {"old/name.py": edit(LINES, 5, "edited"), "r": "r\n"},
    )
    assert paths_of(repo, result.tree) == {"new/name.py", "r"}
    assert read(repo, result.tree, "new/name.py") == edit(LINES, 5, "edited").encode()


def test_rename_with_edit_on_both_sides(repo: pygit2.Repository) -> None:
    result = assert_like_git(
        repo,
        {"a.txt": LINES},
        {"b.txt": edit(LINES, 0, "renamed and edited")},
        {"a.txt": edit(LINES, 9, "edited")},
    )
    assert (
        read(repo, result.tree, "b.txt")
        == edit(edit(LINES, 0, "renamed and edited"), 9, "edited").encode()
    )


def test_renames_are_looked_for_only_when_a_deletion_meets_a_change(
    repo: pygit2.Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[object] = []
    original = merge_module._Merger.merge_with_renames

    def counting(
        self: merge_module._Merger, base: pygit2.Oid | None, ours: pygit2.Oid, theirs: pygit2.Oid
    ) -> pygit2.Oid | bool | None:
        passes.append((base, ours, theirs))
        return original(self, base, ours, theirs)

    monkeypatch.setattr(merge_module._Merger, "merge_with_renames", counting)
    base = {"a.txt": LINES, "b.txt": LINES.upper()}
    # A rename on one side, unrelated edits on the other: the fast walk alone decides.
    unrelated = assert_like_git(
        repo, base, {"moved/a.txt": LINES, "b.txt": LINES.upper()}, {**base, "c.txt": "c\n"}
    )
    assert passes == []
    assert paths_of(repo, unrelated.tree) == {"moved/a.txt", "b.txt", "c.txt"}
    # The renamed file was edited on the other side: the rename pass runs.
    assert_like_git(
        repo,
        base,
        {"moved/a.txt": LINES, "b.txt": LINES.upper()},
        {"a.txt": edit(LINES, 1, "x"), "b.txt": LINES.upper()},
    )
    assert len(passes) == 1


def test_without_rename_detection_a_rename_is_delete_and_add(repo: pygit2.Repository) -> None:
    result = merge(
        repo,
        {"a.txt": LINES},
        {"b.txt": LINES},
        {"a.txt": edit(LINES, 5, "edited")},
        detect_renames=False,
    )
    assert [c.kind for c in result.conflicts] == [ConflictKind.MODIFY_DELETE]


def test_rename_rename_and_rename_delete_conflict(repo: pygit2.Repository) -> None:
    both = merge(repo, {"a.txt": LINES}, {"b.txt": LINES}, {"c.txt": LINES})
    assert [c.kind for c in both.conflicts] == [ConflictKind.RENAME]
    assert "b.txt" in both.conflicts[0].message and "c.txt" in both.conflicts[0].message
    deleted = merge(repo, {"a.txt": LINES, "r": "r\n"}, {"b.txt": LINES, "r": "r\n"}, {"r": "R\n"})
    assert [c.kind for c in deleted.conflicts] == [ConflictKind.RENAME]
    assert "rename/delete" in deleted.conflicts[0].message


def test_same_rename_on_both_sides_is_clean(repo: pygit2.Repository) -> None:
    assert_like_git(
        repo, {"a.txt": LINES}, {"b.txt": edit(LINES, 0, "x")}, {"b.txt": edit(LINES, 9, "y")}
    )


def test_file_added_to_a_directory_the_other_side_renamed(repo: pygit2.Repository) -> None:
    # git (merge.directoryRenames=conflict) reports the new file's location as a conflict.
    result = merge(
        repo,
        {"lib/a.py": LINES, "lib/b.py": LINES.upper()},
        {"src/a.py": LINES, "src/b.py": LINES.upper()},
        {"lib/a.py": LINES, "lib/b.py": LINES.upper(), "lib/c.py": "new\n"},
    )
    (conflict,) = result.conflicts
    assert conflict.kind is ConflictKind.RENAME
    assert conflict.path == "lib/c.py"
    assert "src/c.py" in conflict.message


# -- rules ---------------------------------------------------------------------------------------


CHANGELOG = "# Changes\n\n- first\n"
RULES = (
    MergeRule(("CHANGELOG.md",), RuleStrategy.UNION),
    MergeRule(("**/*.lock",), RuleStrategy.THEIRS),
    MergeRule(("keep-ours/**",), RuleStrategy.OURS),
)


def test_union_rule_keeps_both_appends(repo: pygit2.Repository) -> None:
    result = merge(
        repo,
        {"CHANGELOG.md": CHANGELOG},
        {"CHANGELOG.md": CHANGELOG + "- from integration\n"},
        {"CHANGELOG.md": CHANGELOG + "- from ticket\n"},
        rules=RULES,
    )
    assert result.clean
    assert result.resolved == (("CHANGELOG.md", RuleStrategy.UNION),)
    assert (
        read(repo, result.tree, "CHANGELOG.md")
        == (CHANGELOG + "- from integration\n- from ticket\n").encode()
    )


def test_union_rule_on_a_new_file_both_sides_added(repo: pygit2.Repository) -> None:
    result = merge(
        repo, {"r": "r\n"}, {"r": "r\n", "CHANGELOG.md": "a\n"}, {"r": "r\n", "CHANGELOG.md": "b\n"},
        rules=RULES,
    )  # fmt: skip
    assert result.clean
    assert read(repo, result.tree, "CHANGELOG.md") == b"a\nb\n"


def test_theirs_and_ours_rules_on_lock_files(repo: pygit2.Repository) -> None:
    base = {"app/deps.lock": LINES, "keep-ours/x.lock": LINES}
    result = merge(
        repo,
        base,
        {"app/deps.lock": edit(LINES, 2, "ours"), "keep-ours/x.lock": edit(LINES, 2, "ours")},
        {"app/deps.lock": edit(LINES, 2, "theirs"), "keep-ours/x.lock": edit(LINES, 2, "theirs")},
        rules=RULES[:1] + RULES[2:] + RULES[1:2],  # first matching rule wins
    )
    assert result.clean
    assert dict(result.resolved) == {
        "app/deps.lock": RuleStrategy.THEIRS,
        "keep-ours/x.lock": RuleStrategy.OURS,
    }
    assert read(repo, result.tree, "app/deps.lock") == edit(LINES, 2, "theirs").encode()
    assert read(repo, result.tree, "keep-ours/x.lock") == edit(LINES, 2, "ours").encode()


def test_rules_apply_only_to_the_paths_they_name(repo: pygit2.Repository) -> None:
    result = merge(
        repo,
        {"CHANGELOG.md": CHANGELOG, "README.md": LINES},
        {"CHANGELOG.md": CHANGELOG + "- a\n", "README.md": edit(LINES, 1, "a")},
        {"CHANGELOG.md": CHANGELOG + "- b\n", "README.md": edit(LINES, 1, "b")},
        rules=RULES,
    )
    assert [c.path for c in result.conflicts] == ["README.md"]
    assert result.conflict_paths == ["README.md"]
    assert result.resolved == (("CHANGELOG.md", RuleStrategy.UNION),)
    assert result.tree is None
    assert not result.clean


def test_union_never_settles_a_binary_conflict_but_theirs_does(repo: pygit2.Repository) -> None:
    base, ours, theirs = b"\0a" * 50, b"\0b" * 50, b"\0c" * 50
    union = merge(
        repo,
        {"CHANGELOG.md": base},
        {"CHANGELOG.md": ours},
        {"CHANGELOG.md": theirs},
        rules=RULES,
    )
    assert [c.kind for c in union.conflicts] == [ConflictKind.BINARY]
    assert union.resolved == ()
    picked = merge(repo, {"x.lock": base}, {"x.lock": ours}, {"x.lock": theirs}, rules=RULES)
    assert picked.clean
    assert read(repo, picked.tree, "x.lock") == theirs


def test_ours_rule_settles_modify_delete(repo: pygit2.Repository) -> None:
    result = merge(
        repo,
        {"keep-ours/f": LINES, "r": "r\n"},
        {"r": "r\n"},
        {"keep-ours/f": edit(LINES, 1, "x"), "r": "r\n"},
        rules=RULES,
    )
    assert result.clean
    assert paths_of(repo, result.tree) == {"r"}


# -- API details ---------------------------------------------------------------------------------


def test_commit_ids_and_trivial_cases(repo: pygit2.Repository) -> None:
    b, o = build(repo, {"f": "1\n"}), build(repo, {"f": "2\n"})
    base = repo.create_commit(None, SIG, SIG, "b", b, [])
    ours = repo.create_commit(None, SIG, SIG, "o", o, [base])
    assert merge_trees(repo, base, ours, base).tree == o
    assert merge_trees(repo, b, b, o).tree == o
    assert merge_trees(repo, b, o, o).tree == o


def test_unrelated_histories_merge_as_adds(repo: pygit2.Repository) -> None:
    result = merge(repo, None, {"a": "a\n", "same": "s\n"}, {"b": "b\n", "same": "s\n"})
    assert paths_of(repo, result.tree) == {"a", "b", "same"}
    conflicted = merge(repo, None, {"x": "1\n"}, {"x": "2\n"})
    assert [c.kind for c in conflicted.conflicts] == [ConflictKind.ADD_ADD]


def test_everything_deleted_gives_the_empty_tree(repo: pygit2.Repository) -> None:
    result = merge(repo, {"a": "a\n", "b": "b\n"}, {"b": "b\n"}, {"a": "a\n"})
    assert result.tree == pygit2.Oid(hex="4b825dc642cb6eb9a060e54bf8d69288fbee4904")


# -- update_tree and changed_paths ---------------------------------------------------------------


def test_update_tree_rebuilds_only_the_changed_paths(
    repo: pygit2.Repository, tree_reads: list[pygit2.Oid]
) -> None:
    base = build(
        repo,
        {"a/b/c.txt": "c\n", "a/keep.txt": "k\n", "big/x.txt": "x\n", "gone/only.txt": "g\n"},
    )
    tree_reads.clear()
    new = update_tree(
        repo,
        base,
        {
            ".gitexec/tickets/T-1.yaml": (b"status: completed\n", REG),
            "a/b/c.txt": (b"C\n", EXEC),
            "gone/only.txt": None,
            "missing/path": None,
        },
    )
    old_tree, new_tree = repo[base], repo[new]
    assert isinstance(old_tree, pygit2.Tree)
    assert isinstance(new_tree, pygit2.Tree)
    assert old_tree["big"].id not in tree_reads  # untouched subtrees are not even read
    assert new_tree["big"].id == old_tree["big"].id
    assert paths_of(repo, new) == {
        ".gitexec/tickets/T-1.yaml",
        "a/b/c.txt",
        "a/keep.txt",
        "big/x.txt",
    }
    assert read(repo, new, "a/b/c.txt") == b"C\n"
    assert mode_of(repo, new, "a/b/c.txt") == EXEC
    assert update_tree(repo, base, {}) == base


def test_update_tree_from_nothing_and_replacing(repo: pygit2.Repository) -> None:
    tree = update_tree(repo, None, {"x/y/z": (b"1", REG), "l": (b"x/y/z", LINK)})
    assert paths_of(repo, tree) == {"x/y/z", "l"}
    replaced = update_tree(repo, tree, {"x/y": (b"now a file\n", REG)})
    assert paths_of(repo, replaced) == {"x/y", "l"}
    deeper = update_tree(repo, replaced, {"l/inner": (b"dir now\n", REG)})
    assert paths_of(repo, deeper) == {"x/y", "l/inner"}
    assert update_tree(repo, deeper, {"x/y": None, "l/inner": None}) == pygit2.Oid(
        hex="4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    )


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a", ".git/config", "a/"])
def test_update_tree_rejects_bad_paths(repo: pygit2.Repository, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid path"):
        update_tree(repo, None, {bad: (b"x", REG)})


def test_update_tree_rejects_bad_modes_and_ambiguous_changes(repo: pygit2.Repository) -> None:
    with pytest.raises(ValueError, match="mode"):
        update_tree(repo, None, {"a": (b"x", 0o040000)})
    with pytest.raises(ValueError, match="both as a file and as a directory"):
        update_tree(repo, None, {"a": (b"x", REG), "a/b": (b"y", REG)})


def test_changed_paths(repo: pygit2.Repository, tree_reads: list[pygit2.Oid]) -> None:
    vendor = {f"vendor/{i}.c": f"{i}\n" for i in range(300)}
    a = build(
        repo, dict(vendor, **{"src/x.py": "1\n", "src/y.py": "y\n", "f": "f\n", "d/e": "e\n"})
    )
    b = build(
        repo,
        dict(vendor, **{"src/x.py": "2\n", "src/z.py": "z\n", "f/now-dir": "n\n", "d": "file\n"}),
    )
    tree_reads.clear()
    assert changed_paths(repo, a, b) == [
        "d",
        "d/e",
        "f",
        "f/now-dir",
        "src/x.py",
        "src/y.py",
        "src/z.py",
    ]
    a_tree = repo[a]
    assert isinstance(a_tree, pygit2.Tree)
    assert a_tree["vendor"].id not in tree_reads
    assert changed_paths(repo, a, a) == []
    assert changed_paths(repo, None, build(repo, {"one/two": "x"})) == ["one/two"]
