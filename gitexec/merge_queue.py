"""The integration head: ticket results merge into it here, one at a time, in memory.

The merge queue keeps each result under its ref, merges results in completion or plan
order (conflicts are settled by merge rules here; the rest of the ladder is the
scheduler's), writes each ticket's status into its merge commit, batches integration
gates and bisects a failing batch to roll its culprit back, and finally records the
status of tickets that never merged. It answers with values (`Merged`, `Conflicted`,
`Rejected`, `Gated`) for the scheduler; it never decides a ticket's fate.

The head it merges onto is the one it last wrote and journaled, never the ref's current
value: a branch moved by someone else is detected (compare-and-swap), not merged onto.
Every move is journaled before the ref moves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pygit2

from gitexec import events as ev
from gitexec.config import Config, MergeOrder, Scope
from gitexec.errors import UserError
from gitexec.gates import GateOutcome
from gitexec.globs import PathSet
from gitexec.hunks import conflict_hunks
from gitexec.integration import Integration, RefMoved
from gitexec.journal import Journal
from gitexec.merge import MergeRule, RuleStrategy
from gitexec.refs import ticket_ref
from gitexec.registry import write_status
from gitexec.runstate import RunState, TicketRun, iso
from gitexec.tickets import TICKETS_DIR, ConflictStep, Ticket, TicketState, split_front_matter

ENGINE_DIR = ".gitexec"


# --- verdicts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merged:
    ticket: str
    head: str
    awaiting_gate: bool


@dataclass(frozen=True)
class Conflicted:
    """Merge rules did not settle it: the scheduler takes the next step of the ladder."""

    ticket: str
    paths: tuple[str, ...]
    collided_with: tuple[str, ...]
    text: Mapping[str, str]


@dataclass(frozen=True)
class Rejected:
    """The result cannot land (scope, engine files, a failing gate): a failed attempt."""

    ticket: str
    reason: str
    retryable: bool = True


@dataclass(frozen=True)
class Gated:
    """These merges passed their integration gate: they count now."""

    tickets: tuple[str, ...]


Verdict = Merged | Conflicted | Rejected | Gated


class BranchMoved(UserError):
    """Someone else moved (or deleted) the integration branch during the run."""


@dataclass(frozen=True)
class Landed:
    """A ticket merged into the integration branch, waiting for the integration gate."""

    ticket: str
    base: str  # where its attempt started
    commit: str  # its result
    head: str  # its merge commit
    previous: str  # the head it was merged onto


@dataclass(frozen=True)
class GateBatch:
    entries: tuple[Landed, ...]

    @property
    def heads(self) -> list[str]:
        return [e.head for e in self.entries]


def merge_rules(config: Config) -> tuple[MergeRule, ...]:
    return tuple(MergeRule(r.paths, RuleStrategy(r.strategy)) for r in config.merge.rules)


class MergeQueue:
    """Owns a run's integration head (main thread only)."""

    def __init__(
        self,
        integration: Integration,
        *,
        config: Config,
        tickets: Mapping[str, Ticket],
        plan_order: Sequence[str],
        state: RunState,
        emit: Callable[[ev.Event], object],
        head: str,
    ) -> None:
        self.integration = integration
        self.repo: pygit2.Repository = integration.repo
        self.run_id = integration.run_id
        self.config = config
        self.tickets = tickets
        self.plan_order = [t for t in plan_order if t in tickets]
        self.state = state
        self.emit = emit
        self.head = head  # the head this queue last wrote (and journaled)
        self.published = head  # where it last moved the branch
        # While deferring, moves wait for `publish` (the engine dispatches the tickets a
        # merge made ready first); the journal is synced before the branch moves.
        self.deferring = False
        self.journal: Journal | None = None
        self._unpublished: list[str] = []  # why the head moved since (the reflog's message)
        self._published_at = 0.0
        self.rules = merge_rules(config)
        self.gated = bool(config.gates.integration)
        self.buffered: dict[str, tuple[str, str]] = {}  # plan order: ticket -> (base, commit)
        self.awaiting_gate: list[Landed] = []
        self.gating: GateBatch | None = None
        self.log: list[tuple[str, str, frozenset[str]]] = []  # (head, ticket, changed paths)
        self._logged: dict[str, int] = {}  # head -> its place in `log`

    # --- taking results ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Results wait to merge, or merges wait for their gate."""
        return bool(self.buffered) or self.gating is not None or bool(self.awaiting_gate)

    def keep(self, tid: str, commit: str, attempt: int) -> None:
        """Keep a result under its ref at once: nothing finished is lost, merged or not."""
        self.repo.create_reference_direct(
            ticket_ref(self.run_id, tid),
            pygit2.Oid(hex=commit),
            True,
            message=f"gitexec: result of {tid} attempt {attempt}",
        )

    def submit(self, tid: str, base: str, commit: str) -> list[Verdict]:
        """A result to integrate: merged now, or (merge.order: plan) when its turn comes."""
        if self.config.merge.order is MergeOrder.PLAN:
            self.buffered[tid] = (base, commit)
            return []
        return self.merge(tid, base, commit)

    def next_in_plan_order(self) -> list[Verdict] | None:
        """Merge the next buffered result in plan order; None when it has not arrived (or a
        ticket before it has not settled): the same inputs always give the same tree."""
        if not self.buffered:
            return None  # nothing waits (and no walk over every settled ticket)
        for tid in self.plan_order:
            ts = self.state.tickets[tid]
            if ts.status.terminal:
                continue
            if tid not in self.buffered or ts.awaiting_gate:
                return None
            base, commit = self.buffered.pop(tid)
            return self.merge(tid, base, commit)
        return None

    def take_buffered(self) -> list[str]:
        """Results still waiting for their turn (the run is stopping): they stay in refs."""
        waiting = sorted(self.buffered)
        self.buffered.clear()
        return waiting

    # --- merging ---------------------------------------------------------------------------------

    def merge(self, tid: str, base: str, commit: str) -> list[Verdict]:
        t = self.tickets[tid]
        started = time.monotonic()
        head = self.head
        self.emit(ev.TicketMerging(ticket=tid, commit=commit, head=head))
        changed = self.integration.changed(base, commit)
        rejected = self._rejected(t, changed)
        if rejected is not None:
            return [rejected]
        ladder = t.on_conflict or self.config.merge.on_conflict
        rules = self.rules if ConflictStep.RULES in ladder else ()
        if head == base:
            tree = self.integration.tree_of(commit)
            resolved: tuple[tuple[str, str], ...] = ()
        else:
            # Conflict markers name the tickets on each side (diff3 labels).
            suspects = self.collided_with(base, changed)
            ours = "integration" + (f" ({', '.join(suspects[:3])})" if suspects else "")
            result = self.integration.merge(
                base, head, commit, rules=rules, labels=(ours, "base", tid)
            )
            if not result.clean:
                paths = tuple(c.path for c in result.conflicts)
                return [
                    Conflicted(
                        tid,
                        paths,
                        tuple(self.collided_with(base, paths)),
                        conflict_hunks({c.path: c.text or c.message for c in result.conflicts}),
                    )
                ]
            assert result.tree is not None
            tree = result.tree
            resolved = tuple((p, s.value) for p, s in result.resolved)

        now = round(time.time(), 6)
        ts = self.state.tickets[tid]
        fields = result_fields(self.run_id, ts, commit=commit, note=ts.note, finished_at=now)
        status_text = self._status_text(tree, t, TicketState.COMPLETED, fields)
        if status_text is not None:
            tree = self.integration.with_files(tree, {t.file: status_text})
        new_head = self.integration.commit_merge(
            head=head, result=commit, tree=tree, ticket_id=tid, title=t.title
        )
        self.emit(
            ev.TicketMerged(
                ticket=tid,
                head=new_head,
                previous=head,
                commit=commit,
                resolved=resolved,
                merge_s=round(time.monotonic() - started, 6),
                awaiting_gate=self.gated,
                t=now,
            )
        )
        self._move(new_head, f"merge {tid}")
        self._logged[new_head] = len(self.log)
        self.log.append((new_head, tid, frozenset(changed)))
        if self.gated:
            self.awaiting_gate.append(Landed(tid, base, commit, new_head, head))
        return [Merged(tid, new_head, self.gated)]

    def _rejected(self, t: Ticket, changed: Sequence[str]) -> Rejected | None:
        engine_files = [p for p in changed if p == ENGINE_DIR or p.startswith(ENGINE_DIR + "/")]
        if engine_files:
            return Rejected(
                t.id,
                "the agent committed changes under .gitexec/ (ticket files are the engine's): "
                + ", ".join(engine_files[:5]),
            )
        if t.paths and self.config.scope is not Scope.OFF:
            outside = PathSet(t.paths).outside(changed)
            if outside:
                action = self.config.scope.value
                self.emit(ev.ScopeViolation(ticket=t.id, paths=tuple(outside), action=action))
                if self.config.scope is Scope.ENFORCE:
                    return Rejected(
                        t.id,
                        f"changed paths outside its declared scope: {', '.join(outside[:10])}",
                    )
        return None

    def _move(self, new: str, reason: str) -> None:
        """Move the head to `new`, which the journal already names (so `new` is the head
        from now on, moved or not); the branch follows now, or at `publish`."""
        self.head = new
        self._unpublished.append(reason)
        if not self.deferring:
            self.publish()

    def publish(self, every_s: float = 0.0) -> None:
        """Compare-and-swap the branch from where this queue last moved it to the head:
        one move for every merge since (or, with `every_s`, for every merge of that long),
        once the journal saying so is on disk."""
        if self.head == self.published:
            self._unpublished.clear()
            return
        if time.monotonic() - self._published_at < every_s:
            return
        if self.journal is not None:
            self.journal.sync()
        reasons = self._unpublished
        reason = ", ".join(reasons[:3]) + (f" and {len(reasons) - 3} more" if reasons[3:] else "")
        try:
            self.integration.move(self.published, self.head, reason)
        except RefMoved as exc:
            raise BranchMoved(
                f"the integration branch was moved by someone else during the run ({exc}); "
                f"the run stopped, nothing is lost: its last head is {self.head[:12]} and "
                "every result is kept; see `git exec resume --help` (--onto) to continue"
            ) from exc
        self.published = self.head
        self._published_at = time.monotonic()
        reasons.clear()

    # --- who touched what ------------------------------------------------------------------------

    def merged_since(self, base: str) -> list[tuple[str, frozenset[str]]]:
        """(ticket, changed paths) of merges on top of `base` in this session."""
        at = self._logged.get(base)
        start = at + 1 if at is not None else 0
        return [(tid, changed) for _, tid, changed in self.log[start:]]

    def collided_with(self, base: str, paths: Sequence[str]) -> list[str]:
        """Tickets merged since `base` that touched any of `paths`."""
        wanted = set(paths)
        return [tid for tid, changed in self.merged_since(base) if changed & wanted]

    def _forget_after(self, head: str) -> None:
        at = self._logged.get(head)
        if at is not None:
            for gone, _, _ in self.log[at + 1 :]:
                del self._logged[gone]
            del self.log[at + 1 :]

    # --- integration gates -----------------------------------------------------------------------

    def next_gate(self, *, others_running: bool) -> GateBatch | None:
        """A batch to gate: `gates.every` merges, or what waits once nothing else runs."""
        if self.gating is not None or not self.awaiting_gate:
            return None
        if len(self.awaiting_gate) < self.config.gates.every and others_running:
            return None
        batch = GateBatch(tuple(self.awaiting_gate))
        self.gating = batch
        self.emit(ev.GateStarted(head=batch.entries[-1].head, tickets=_ids(batch.entries)))
        return batch

    def gate_done(self, batch: GateBatch, outcome: GateOutcome) -> list[Verdict]:
        self.gating = None
        if outcome.ok:
            return self._passed(batch.entries)
        if outcome.cancelled or outcome.culprit is None:
            return []  # stopping: the batch stays unverified (see stop_unverified)
        culprit = batch.entries[outcome.culprit]
        verdicts = self._passed(batch.entries[: outcome.culprit])
        # Everything merged after the culprit sits on top of it: move the branch back to
        # before the culprit and merge those results again.
        at = self.awaiting_gate.index(culprit)
        later = self.awaiting_gate[at + 1 :]
        del self.awaiting_gate[at:]
        self.emit(
            ev.GateFailed(
                ticket=culprit.ticket, head=culprit.head, runs=outcome.runs, output=outcome.output
            )
        )
        self._rewind(culprit.previous, f"gate failed: roll back {culprit.ticket}", "gate rollback")
        verdicts.append(
            Rejected(culprit.ticket, "integration gate failed: " + outcome.output.strip())
        )
        for entry in later:
            self.emit(
                ev.TicketRequeued(
                    ticket=entry.ticket,
                    reason=f"merged again without {culprit.ticket}",
                    keep_result=True,
                )
            )
            verdicts.extend(self.merge(entry.ticket, entry.base, entry.commit))
        return verdicts

    def _passed(self, entries: Sequence[Landed]) -> list[Verdict]:
        if not entries:
            return []
        self.emit(ev.GatePassed(head=entries[-1].head, tickets=_ids(entries)))
        for entry in entries:
            self.awaiting_gate.remove(entry)
        return [Gated(_ids(entries))]

    def stop_unverified(self) -> list[str]:
        """A forced stop abandons merges no gate has passed: undo them (they stay
        resumable, their results kept); returns those tickets."""
        if self.gating is not None or not self.awaiting_gate:
            return []
        first = self.awaiting_gate[0]
        self._rewind(first.previous, "stop: roll back ungated merges", "stop")
        tickets = list(_ids(self.awaiting_gate))
        self.awaiting_gate = []
        return tickets

    def _rewind(self, head: str, reflog: str, reason: str) -> None:
        current = self.head
        self.emit(ev.HeadMoved(head=head, previous=current, reason=reason))
        self._move(head, reflog)
        self._forget_after(head)

    # --- the end ---------------------------------------------------------------------------------

    def record_unmerged(self) -> None:
        """One commit recording the status of tickets that ended without merging."""
        head = self.head
        tree = self.integration.tree_of(head)
        files: dict[str, bytes] = {}
        done: list[str] = []
        for tid, ts in sorted(self.state.tickets.items()):
            if not ts.status.terminal or ts.status is TicketState.COMPLETED:
                continue
            if self.state.recorded.get(tid) == ts.status.value:
                continue  # recorded by an earlier pass (collect, resume)
            fields = result_fields(
                self.run_id, ts, commit=ts.commit, reason=ts.reason, finished_at=ts.finished_at
            )
            text = self._status_text(tree, self.tickets[tid], ts.status, fields)
            if text is not None:
                files[self.tickets[tid].file] = text
                done.append(tid)
        if files:
            summary = f"gitexec: record status of {len(files)} unmerged ticket(s)"
            self.commit_files(files, summary, tickets=done)

    def ticket_ids(self) -> list[str]:
        """Ids of the ticket files on the integration head."""
        tree = self.repo[self.integration.tree_of(self.head)]
        assert isinstance(tree, pygit2.Tree)
        try:
            folder = tree[TICKETS_DIR]
        except KeyError:
            return []
        if not isinstance(folder, pygit2.Tree):
            return []
        return [(e.name or "").rsplit(".", 1)[0] for e in folder]

    def commit_files(
        self, files: Mapping[str, bytes], summary: str, *, tickets: Sequence[str] = ()
    ) -> None:
        """One commit on the head writing `files` (journaled, then the branch moves);
        `tickets`: those whose status it records."""
        head = self.head
        new = self.integration.commit_files(head, files, summary)
        self.emit(ev.HeadMoved(head=new, previous=head, reason=summary, tickets=tuple(tickets)))
        self._move(new, summary)

    def validation(self, check: Callable[[str], tuple[bool, str]] | None) -> ev.Validation:
        """`run --validate`: every ticket file on the head records what the journal says
        happened to it, and the integration gate (`check`) passes on the final head."""
        problems = self.recorded_problems()
        if check is not None and not problems:
            ok, output = check(self.head)
            if not ok:
                problems.append(f"the final result fails its gate: {output.strip()}")
        return ev.Validation(head=self.head, ok=not problems, problems=tuple(problems))

    def recorded_problems(self) -> list[str]:
        """`run --validate`: ticket files on the head that do not say what the journal says."""
        from ruamel.yaml import YAML

        problems: list[str] = []
        tree = self.integration.tree_of(self.head)
        loader = YAML(typ="safe")
        for tid, ts in sorted(self.state.tickets.items()):
            data = self.integration.read(tree, self.tickets[tid].file)
            text = (data or b"").decode("utf-8", "replace")
            if self.tickets[tid].file.endswith(".md"):
                split = split_front_matter(text)
                text = split[0] if split else ""
            try:
                recorded = loader.load(text) or {}
            except Exception:
                recorded = {}
            result = recorded.get("result") if isinstance(recorded, dict) else None
            if not isinstance(recorded, dict) or recorded.get("status") != ts.status.value:
                problems.append(f"{tid}: the ticket file does not say {ts.status.value}")
            elif ts.status.terminal and (
                not isinstance(result, dict) or result.get("run") != self.run_id
            ):
                problems.append(f"{tid}: the ticket file's result is not from run {self.run_id}")
        return problems

    def _status_text(
        self, tree: pygit2.Oid, ticket: Ticket, state: TicketState, fields: dict[str, Any]
    ) -> bytes | None:
        data = self.integration.read(tree, ticket.file)
        if data is None:
            return None
        try:
            text = write_status(ticket.file, data.decode("utf-8-sig"), state, fields)
        except (ValueError, UnicodeDecodeError):
            return None
        return text.encode("utf-8")

    # --- after a crash ---------------------------------------------------------------------------

    def restore(self) -> None:
        """Merges the journal says wait for their gate wait again (the gate runs before
        anything counts them)."""
        by_head = {
            ts.merge_commit: ts
            for ts in self.state.tickets.values()
            if ts.awaiting_gate and ts.merge_commit
        }
        chain: list[TicketRun] = []
        head: str | None = self.head
        while head in by_head:  # newest first, along the merges' previous heads
            chain.append(by_head.pop(head))
            head = chain[-1].previous_head
        for ts in [*reversed(chain), *by_head.values()]:
            assert ts.merge_commit is not None
            self.awaiting_gate.append(
                Landed(
                    ts.id,
                    ts.base or "",
                    ts.commit or "",
                    ts.merge_commit,
                    ts.previous_head or ts.merge_commit,
                )
            )


def result_fields(
    run_id: str,
    ts: TicketRun,
    *,
    commit: str | None,
    finished_at: float | None,
    note: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The `result` a ticket file records (the same times `status` shows), with the failed and
    throttled attempts and the files it conflicted on when there were any."""
    out: dict[str, Any] = {"run": run_id}
    if commit:
        out["commit"] = commit
    out["attempts"] = ts.attempts
    out["duration"] = round(ts.agent_s, 1)
    out["finished_at"] = iso(finished_at)
    out.update((k, v) for k, v in ts.ledger().items() if v is not None)
    if ts.failed_attempts:
        out["failed_attempts"] = ts.failed_attempts
    if ts.throttles:
        out["throttled"] = ts.throttles
    if ts.conflicts:
        out["conflicts"] = sorted(ts.conflicts)
    if note:
        out["note"] = note
    if reason:
        out["reason"] = reason
    return out


def _ids(entries: Sequence[Landed]) -> tuple[str, ...]:
    return tuple(e.ticket for e in entries)
