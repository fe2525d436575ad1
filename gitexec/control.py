"""Live control of a running engine from another process: requests and responses as files.

A client drops `runs/<id>/control/req-<time>-<id>.json` (written atomically); the engine
polls the directory every loop turn (20 times a second), journals what it does, and
answers in `resp-<id>.json`. Files survive either side crashing, need no sockets, and
work the same on a laptop and in CI.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gitexec.errors import UserError

CONTROL_DIR = "control"


@dataclass(frozen=True)
class Response:
    ok: bool
    message: str
    data: dict[str, Any]


class Controlled(Protocol):
    """What a live engine offers to control requests (engine.py implements it)."""

    @property
    def run_id(self) -> str: ...
    @property
    def run_dir(self) -> Path: ...
    @property
    def jobs(self) -> int: ...
    @property
    def paused(self) -> bool: ...
    def running(self) -> list[str]: ...
    def agent_names(self) -> list[str]: ...
    def pause(self) -> None: ...
    def unpause(self) -> None: ...
    def stop(self, *, force: bool, preserve_state: bool) -> None: ...
    def set_jobs(self, jobs: int) -> None: ...
    def set_priority(self, tid: str, priority: int) -> None: ...
    def set_quota(self, pool: str, max_parallel: int) -> None: ...
    def retry(self, tid: str, *, agent: str | None, keep_worktree: bool = False) -> list[str]: ...
    def cancel(self, tids: Sequence[str], *, force: bool) -> list[str]: ...
    def enqueue(self, items: Sequence[tuple[str, str]]) -> list[str]: ...
    def set_resource(self, name: str, capacity: float) -> None: ...
    def set_agent_limit(self, name: str, max_parallel: int) -> None: ...
    def run_alone(self, group: int) -> list[str]: ...


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(payload, f)
    os.replace(tmp, path)


def send(run_dir: Path, action: str, *, timeout_s: float = 30.0, **args: Any) -> Response:
    """Send a request to the live engine of a run and wait for its answer."""
    directory = run_dir / CONTROL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    request_id = uuid.uuid4().hex[:12]
    request = directory / f"req-{time.time_ns()}-{request_id}.json"
    response = directory / f"resp-{request_id}.json"
    _write_json(request, {"id": request_id, "action": action, "args": args})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if response.is_file():
            payload = json.loads(response.read_text(encoding="utf-8"))
            response.unlink()
            return Response(bool(payload["ok"]), str(payload["message"]), payload.get("data", {}))
        time.sleep(0.01)
    try:
        request.unlink()
    except FileNotFoundError:
        pass  # taken by the engine just now: it will still act on it
    else:
        raise UserError(f"the engine of run {run_dir.name} did not answer within {timeout_s:g}s")
    raise UserError(f"the engine of run {run_dir.name} took the request but did not answer")


def process_requests(engine: Controlled) -> None:
    """Handle waiting requests (called from the engine's loop)."""
    directory = engine.run_dir / CONTROL_DIR
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("req-"))
    except FileNotFoundError:
        return
    for name in names:
        path = directory / name
        try:
            request = json.loads(path.read_text(encoding="utf-8"))
            path.unlink()
        except (OSError, ValueError):
            continue
        if not isinstance(request, dict):
            continue
        action = str(request.get("action"))
        handler = _HANDLERS.get(action)
        args = request.get("args")
        if handler is None:
            result = Response(False, f"unknown control action {action!r}", {})
        else:
            try:
                result = handler(engine, args if isinstance(args, dict) else {})
            except UserError as exc:
                result = Response(False, str(exc), {})
        _write_json(
            directory / f"resp-{request.get('id')}.json",
            {"ok": result.ok, "message": result.message, "data": result.data},
        )


# --- actions -------------------------------------------------------------------------------


def _pause(engine: Controlled, args: dict[str, Any]) -> Response:
    if engine.paused:
        return Response(True, "already paused", {"running": engine.running()})
    engine.pause()
    return Response(True, "paused: no new tickets will start", {"running": engine.running()})


def _resume(engine: Controlled, args: dict[str, Any]) -> Response:
    if not engine.paused:
        return Response(True, "not paused", {})
    engine.unpause()
    return Response(True, "resumed", {})


def _stop(engine: Controlled, args: dict[str, Any]) -> Response:
    force = bool(args.get("force"))
    preserve = bool(args.get("preserve_state"))
    engine.stop(force=force, preserve_state=preserve)
    what = "killing running agents" if force else "letting running tickets finish"
    keep = "the run stays resumable" if preserve else "pending tickets will be cancelled"
    return Response(True, f"stopping: {what}; {keep}", {"running": engine.running()})


def _adjust(engine: Controlled, args: dict[str, Any]) -> Response:
    messages: list[str] = []
    jobs = _number(args.get("jobs"), "jobs")
    delta = _number(args.get("delta"), "delta")
    if delta:
        jobs = max(1, engine.jobs + delta)
    if jobs is not None:
        if jobs < 1:
            raise UserError("jobs must be at least 1")
        old = engine.jobs
        engine.set_jobs(jobs)
        messages.append(f"jobs {old} -> {jobs} (running tickets are not interrupted)")
    priorities = args.get("priority") or {}
    if not isinstance(priorities, dict):
        raise UserError("priority: expected ID=N pairs")
    for tid, value in priorities.items():
        engine.set_priority(str(tid), _number(value, f"priority of {tid}") or 0)
        messages.append(f"priority of {tid} = {value}")
    for name, value in _pairs(args, "resource"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UserError(f"resource {name}: expected a capacity above 0, got {value!r}")
        engine.set_resource(name, float(value))
        messages.append(f"resource {name}: capacity {value:g}")
    for name, value in _pairs(args, "agent"):
        limit = _number(value, f"agent {name}")
        if limit is None or limit < 1:
            raise UserError(f"agent {name}: expected at least 1")
        engine.set_agent_limit(name, limit)
        messages.append(f"agent {name}: {limit} at once")
    quotas = args.get("quota") or {}
    if not isinstance(quotas, dict):
        raise UserError("quota: expected POOL=N pairs")
    for pool, value in quotas.items():
        limit = _number(value, f"quota {pool}")
        if limit is None or limit < 1:
            raise UserError(f"quota {pool}: expected at least 1")
        engine.set_quota(str(pool), limit)
        messages.append(f"quota {pool}: {limit} at once")
    if not messages:
        raise UserError("nothing to adjust")
    return Response(True, "; ".join(messages), {"jobs": engine.jobs})


def _retry(engine: Controlled, args: dict[str, Any]) -> Response:
    tid = str(args.get("ticket"))
    requeued = engine.retry(tid, agent=None, keep_worktree=bool(args.get("keep_worktree")))
    return Response(True, f"requeued {', '.join(requeued)}", {"requeued": requeued})


def _reassign(engine: Controlled, args: dict[str, Any]) -> Response:
    tid, agent = str(args.get("ticket")), str(args.get("agent"))
    if agent not in engine.agent_names():
        raise UserError(
            f"unknown agent {agent!r} (agents: {', '.join(sorted(engine.agent_names()))})"
        )
    requeued = engine.retry(tid, agent=agent)
    return Response(True, f"{tid} reassigned to {agent}; requeued {', '.join(requeued)}", {})


def _fallback_sequential(engine: Controlled, args: dict[str, Any]) -> Response:
    group = _number(args.get("group"), "group") or 0
    changed = engine.run_alone(group)
    return Response(True, f"group {group}: {len(changed)} ticket(s) will run one at a time", {})


def _cancel(engine: Controlled, args: dict[str, Any]) -> Response:
    tids = [str(t) for t in args.get("tickets") or []]
    cancelled = engine.cancel(tids, force=bool(args.get("force")))
    return Response(True, f"cancelled {', '.join(cancelled)}", {"cancelled": cancelled})


def _enqueue(engine: Controlled, args: dict[str, Any]) -> Response:
    items = args.get("tickets") or []
    if not isinstance(items, list) or not all(
        isinstance(i, list) and len(i) == 2 and all(isinstance(x, str) for x in i) for i in items
    ):
        raise UserError("enqueue: expected (file, text) pairs")
    added = engine.enqueue([(str(f), str(t)) for f, t in items])
    return Response(True, f"added {', '.join(added)}", {"added": added})


def _pairs(args: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    found = args.get(key) or {}
    if not isinstance(found, dict):
        raise UserError(f"{key}: expected NAME=N pairs")
    return [(str(k), v) for k, v in found.items()]


def _number(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{what}: expected an integer, got {value!r}")
    return value


_HANDLERS: dict[str, Callable[[Controlled, dict[str, Any]], Response]] = {
    "pause": _pause,
    "resume": _resume,
    "stop": _stop,
    "adjust": _adjust,
    "retry": _retry,
    "reassign": _reassign,
    "fallback-sequential": _fallback_sequential,
    "cancel": _cancel,
    "enqueue": _enqueue,
}
