from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.clis import make_worktree
from tests.agents.server import ScriptedModel


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    """The scripted model server, running; give it a script with `set_script`."""
    with ScriptedModel() as server:
        yield server


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A linked `git worktree` of a fresh repository, outside `.git`."""
    return make_worktree(tmp_path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The agent's HOME, where the CLIs keep their configuration and sessions."""
    path = tmp_path / "home"
    path.mkdir()
    return path
