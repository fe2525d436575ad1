"""The agent pool: reusable worktrees, by default `~/.cache/gitexec/<repository id>/slot-N`.

The pool lives outside the git directory (AI agents refuse to write under any `.git/`
path), in a directory of its own per repository (`pool_dir`), so two clones never share
one. Only the slots' bookkeeping (setup markers and logs) stays under
`<common>/gitexec/worktrees`, where older versions kept the pool itself; such a pool is
removed on first use. Each slot is a `Slot` (slot.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gitexec.errors import UserError
from gitexec.gitutil import (
    RepoPaths,
    read_gitexec_config,
)
from gitexec.slot import GATE_SLOT, SLOT_PREFIX, Slot
from gitexec.worktrees import (
    POOLS,
    WORKTREES,
    force_remove,
    forget_worktrees,
    recorded_pool_dirs,
    records_dir,
)


class Pool:
    """A fixed set of slots in `root` (default: where the settings say, see
    `resolve_pool_dir`); the engine hands free ones to tickets."""

    def __init__(self, repo: RepoPaths, size: int, root: Path | None = None) -> None:
        self.repo = repo
        self.root = root if root is not None else resolve_pool_dir(repo)
        remove_legacy_pool(repo)
        self.slots: list[Slot] = []
        self._free: list[Slot] = []
        self._gate: Slot | None = None
        self.resize(size)

    def resize(self, size: int) -> None:
        """Grow to `size` slots (shrinking just stops handing out the extra ones)."""
        while len(self.slots) < size:
            n = len(self.slots) + 1
            slot = Slot(
                n, self.root / f"{SLOT_PREFIX}{n}", self.repo.state_dir, self.repo.common_dir
            )
            self.slots.append(slot)
            self._free.append(slot)
        self._limit = size

    def acquire(self, prefer: int | None = None) -> Slot | None:
        """A free slot: `prefer` when it is free, else the lowest number; or None."""
        usable = [s for s in self._free if s.index <= self._limit]
        if not usable:
            return None
        preferred = [s for s in usable if s.index == prefer]
        slot = preferred[0] if preferred else min(usable, key=lambda s: s.index)
        self._free.remove(slot)
        return slot

    @property
    def free(self) -> int:
        """How many slots `acquire` can hand out now."""
        return sum(1 for s in self._free if s.index <= self._limit)

    def release(self, slot: Slot) -> None:
        if slot not in self._free:
            self._free.append(slot)

    def close(self) -> None:
        """Let go of every slot; idle ones leave what this engine knows of them for the
        next engine (slots still in use leave nothing: the next engine resets them fully)."""
        for slot in self._free:
            slot.save_state()
        # Closing a watcher waits for the kernel to retire its watches (a grace period,
        # tens of milliseconds on a busy machine): side by side, the waits overlap.
        closing = [
            threading.Thread(target=slot.close, name=f"gitexec-close-{slot.name}")
            for slot in [*self.slots, *([self._gate] if self._gate else [])]
        ]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()

    @property
    def busy(self) -> int:
        return len(self.slots) - len(self._free)

    def gate_slot(self) -> Slot:
        """The worktree integration gates run in (not one of the agents' slots)."""
        if self._gate is None:
            self._gate = Slot(
                0,
                self.root / GATE_SLOT,
                self.repo.state_dir,
                self.repo.common_dir,
                name=GATE_SLOT,
            )
        return self._gate


# --- where pools live ----------------------------------------------------------------------


def repository_id(repo: RepoPaths) -> str:
    """A readable name plus a hash of the git common dir's real path: clones of one
    repository get different ids, the worktrees of one repository share it."""
    common = Path(os.path.realpath(repo.common_dir))
    digest = hashlib.sha256(os.fsencode(common)).hexdigest()[:16]
    name = common.parent.name if common.name == ".git" else common.name.removesuffix(".git")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40] or "repository"
    return f"{readable}-{digest}"


def pool_dir(repo: RepoPaths, setting: str | None = None) -> Path:
    """`<setting>/<repository id>`, the setting relative to the repository's top level;
    without one, `$XDG_CACHE_HOME/gitexec/<repository id>` (`~/.cache` when unset)."""
    if setting:
        base = Path(os.path.expanduser(setting))
        if not base.is_absolute():
            base = repo.root / base
    else:
        cache = os.environ.get("XDG_CACHE_HOME", "")
        base = (Path(cache) if os.path.isabs(cache) else Path.home() / ".cache") / "gitexec"
    root = Path(os.path.abspath(base / repository_id(repo)))
    top = repo.toplevel
    if top is not None and _inside(root, top) and not _inside(root, repo.common_dir):
        raise UserError(
            f"worktree.dir: the pool {root} would be inside the work tree {top}, where "
            "its worktrees show up as untracked repositories; choose a directory outside it"
        )
    return root


def resolve_pool_dir(repo: RepoPaths) -> Path:
    """The pool directory the settings name: GITEXEC_WORKTREE_DIR, then `git config
    gitexec.worktreeDir`, then `worktree.dir` in the work tree's .gitexec/config.yaml."""
    from gitexec.config import CONFIG_FILE, SETTINGS, Config, parse_config, resolve

    configured: str | None = None
    if repo.toplevel is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = (repo.toplevel / CONFIG_FILE).read_text(encoding="utf-8")
            configured = parse_config(CONFIG_FILE, text).config.worktree_dir
    setting = next(s for s in SETTINGS if s.attr == "worktree_dir")
    env = {k: v for k, v in os.environ.items() if k == setting.env}
    git_config = {
        k: v for k, v in read_gitexec_config(repo.root).items() if k == setting.git_key.lower()
    }
    resolved = resolve(Config(worktree_dir=configured), env=env, git_config=git_config)
    return pool_dir(repo, resolved.worktree_dir)


def pool_dirs(repo: RepoPaths, *, existing: bool = True) -> list[Path]:
    """Every directory this repository's pool was made in, and the one the settings name
    now (settings may have changed since); only those that exist, unless told otherwise."""
    found = [*recorded_pool_dirs(repo.state_dir)]
    with contextlib.suppress(UserError):
        found.append(resolve_pool_dir(repo))
    unique = list(dict.fromkeys(found))
    return [p for p in unique if p.is_dir()] if existing else unique


def _inside(path: Path, directory: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory))


def _is_slot(path: Path) -> bool:
    name = path.name
    return (name.startswith(SLOT_PREFIX) or name == GATE_SLOT) and not os.path.islink(path)


# --- removing worktrees --------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """What removing pooled worktrees did: names removed, and problems (path: reason)."""

    removed: tuple[str, ...]
    failed: tuple[str, ...]


def _remove_slots(repo: RepoPaths, root: Path) -> Removal:
    removed: list[str] = []
    failed: list[str] = []
    try:
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and _is_slot(p))
    except OSError:
        return Removal((), ())
    for path in candidates:
        problem = force_remove(path)
        if problem is None:
            removed.append(path.name)
        else:
            failed.append(problem)
    if candidates:
        forget_worktrees(repo.common_dir, candidates)
    return Removal(tuple(removed), tuple(failed))


def remove_legacy_pool(repo: RepoPaths) -> Removal:
    """Remove a pool older versions made under `<common>/gitexec/worktrees`."""
    return _remove_slots(repo, repo.state_dir / WORKTREES)


def remove_pools(repo: RepoPaths) -> Removal:
    """Remove every pooled worktree of the repository (for `git exec clean`), wherever its
    pools were made, and their bookkeeping."""
    removed: list[str] = []
    failed: list[str] = []
    roots = pool_dirs(repo)
    for root in [*roots, repo.state_dir / WORKTREES]:
        result = _remove_slots(repo, root)
        removed.extend(result.removed)
        failed.extend(result.failed)
    for root in roots:
        with contextlib.suppress(OSError):
            root.rmdir()  # ours, and empty unless something could not be removed
    # Worktrees someone deleted by hand leave git's records of them behind.
    for admin in _stale_admins(repo, pool_dirs(repo, existing=False)):
        force_remove(admin)
    state = repo.state_dir / WORKTREES
    if state.is_dir():
        for path in state.iterdir():
            if path.is_file() and path.name != POOLS:
                path.unlink()
        remaining = [p for p in recorded_pool_dirs(repo.state_dir) if p.is_dir()]
        if remaining:
            records_dir(repo.state_dir).write_bytes(b"\0".join(os.fsencode(p) for p in remaining))
        else:
            with contextlib.suppress(OSError):
                records_dir(repo.state_dir).unlink()
    return Removal(tuple(sorted(set(removed))), tuple(failed))


def _stale_admins(repo: RepoPaths, roots: Sequence[Path]) -> list[Path]:
    """git's records of worktrees that were in one of `roots` and are gone."""
    stale: list[Path] = []
    try:
        admins = list((repo.common_dir / "worktrees").iterdir())
    except OSError:
        return stale
    homes = [*roots, repo.state_dir / WORKTREES]
    for admin in admins:
        try:
            worktree = Path((admin / "gitdir").read_text(encoding="utf-8").strip()).parent
        except (OSError, UnicodeDecodeError):
            continue
        if not worktree.exists() and any(worktree.parent == home for home in homes):
            stale.append(admin)
    return stale
