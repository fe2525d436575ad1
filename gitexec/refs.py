"""Where a run keeps its refs: the one place that spells their names.

- `refs/heads/gitexec/<run>`: the integration branch, one merge commit per ticket;
- `refs/gitexec/<run>/<ticket>`: each ticket's result, kept as soon as it exists, so
  nothing finished is lost whether or not it merged;
- `refs/gitexec-left/<run>/<ticket>`: what a failed attempt left in its worktree, for
  `retry --keep-worktree` (removed with the run);
- `refs/gitexec-displaced/<run>/<n>`: where someone else had moved the integration branch
  when `resume --onto journal` put it back (kept apart: `clean` never removes it).
"""

from __future__ import annotations

BRANCH_PREFIX = "gitexec/"
INTEGRATION_PREFIX = "refs/heads/" + BRANCH_PREFIX
RESULTS_PREFIX = "refs/gitexec/"
DISPLACED_PREFIX = "refs/gitexec-displaced/"
LEFT_PREFIX = "refs/gitexec-left/"


def integration_ref(run_id: str) -> str:
    return f"{INTEGRATION_PREFIX}{run_id}"


def integration_branch(run_id: str) -> str:
    """The branch name users type (`git log gitexec/<run>`)."""
    return f"{BRANCH_PREFIX}{run_id}"


def ticket_ref(run_id: str, ticket_id: str) -> str:
    return f"{results_prefix(run_id)}{ticket_id}"


def results_prefix(run_id: str) -> str:
    """The namespace of a run's ticket results (ends with '/')."""
    return f"{RESULTS_PREFIX}{run_id}/"


def branch_name(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


def displaced_ref(run_id: str, n: int) -> str:
    return f"{DISPLACED_PREFIX}{run_id}/{n}"


def left_ref(run_id: str, ticket_id: str) -> str:
    return f"{LEFT_PREFIX}{run_id}/{ticket_id}"
