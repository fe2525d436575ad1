"""gitexec: a git-native parallel ticket execution engine."""

from __future__ import annotations

__version__ = "0.1.0"
