"""Notifications: `notify:` in the config, and the Notifier running its commands with real
processes, whatever they do (fail, hang, be missing, be flooded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gitexec import events as ev
from gitexec.config import parse_config
from gitexec.notify import Notifier, notification
from gitexec.notifyspec import NotifySpec
from gitexec.runstate import RunStatus
from gitexec.tickets import ConflictStep, TicketState
from tests.helpers import init_repo, wait_for
from tests.project import gitexec

# Appends the event (stdin) to $1 as one line, with GITEXEC_EVENT and the rendered message.
APPEND = (
    "sh",
    "-c",
    'printf "%s\\t%s\\t%s\\n" "$GITEXEC_EVENT" "$2" "$(cat)" >> "$1"',
    "notify",
)


def events() -> list[ev.Event]:
    return [
        ev.AgentExited(ticket="A", exit_code=1, t=1.0),  # not worth a notification
        ev.TicketFinished(ticket="A", state=TicketState.FAILED, reason="agent exited with 1"),
        ev.TicketFinished(ticket="B", state=TicketState.BLOCKED, reason="A failed"),
        ev.Conflict(ticket="C", step=ConflictStep.RERUN, paths=("x",)),
        ev.Conflict(ticket="C", step=ConflictStep.FAIL, paths=("x",), text={"x": "<<<<<<<"}),
        ev.TicketThrottled(ticket="D", reason="rate limited", delay_s=30.0),
        ev.BudgetReached(spent_usd=5.25, budget_usd=5.0),
        ev.RunFinished(state=RunStatus.FAILED, head="abc", t=2.0),
    ]


def read(path: Path) -> list[tuple[str, str, dict[str, object]]]:
    out = []
    for line in path.read_text().splitlines():
        kind, message, payload = line.split("\t")
        out.append((kind, message, json.loads(payload)))
    return out


def make(
    specs: list[NotifySpec], tmp_path: Path, queue_size: int = 32
) -> tuple[Notifier, list[str]]:
    warnings: list[str] = []
    notifier = Notifier(
        specs,
        run_id="r1",
        cwd=tmp_path,
        log=tmp_path / "notify.log",
        warn=warnings.append,
        queue_size=queue_size,
    )
    return notifier, warnings


def test_commands_get_the_event_on_stdin_and_in_the_environment(tmp_path: Path) -> None:
    out, only_end = tmp_path / "all", tmp_path / "end"
    notifier, warnings = make(
        [
            NotifySpec((*APPEND, str(out), "{{ message }}")),
            NotifySpec((*APPEND, str(only_end), "{{ event.state }}"), on=("run-finished",)),
        ],
        tmp_path,
    )
    for e in events():
        notifier.observe(e)
    notifier.close()
    assert warnings == []
    got = read(out)
    assert [kind for kind, _, _ in got] == [
        "ticket-failed",
        "conflict",
        "throttled",
        "budget-reached",
        "run-finished",
    ]
    _, message, payload = got[0]
    assert message == "gitexec run r1: A failed: agent exited with 1"
    assert payload["event"] == "ticket-failed" and payload["run"] == "r1"
    assert payload["ticket"] == "A" and payload["reason"] == "agent exited with 1"
    assert got[1][2]["paths"] == ["x"] and "text" not in got[1][2]  # hunks stay in reports
    assert got[2][2]["delay_s"] == 30.0
    assert got[3][1] == "gitexec run r1: budget reached: $5.2500 of $5.0000 spent"
    assert [(k, m) for k, m, _ in read(only_end)] == [("run-finished", "failed")]


def test_failing_missing_and_hanging_commands_are_warnings(tmp_path: Path) -> None:
    out = tmp_path / "after"
    notifier, warnings = make(
        [
            NotifySpec(("sh", "-c", "echo broken >&2; exit 3"), on=("run-finished",)),
            NotifySpec(("no-such-notifier-program",), on=("run-finished",)),
            NotifySpec(("sleep", "60"), on=("run-finished",), timeout_s=0.3),
            NotifySpec((*APPEND, str(out), "{{ kind }}"), on=("run-finished",)),
        ],
        tmp_path,
    )
    notifier.observe(ev.RunFinished(state=RunStatus.COMPLETED, head="abc"))
    notifier.close()
    assert len(warnings) == 3, warnings
    assert "notify 'sh' on run-finished exited with status 3" in warnings[0]
    assert "notify 'no-such-notifier-program' on run-finished could not start" in warnings[1]
    assert "notify 'sleep' on run-finished timed out after 0.3s" in warnings[2]
    assert [k for k, _, _ in read(out)] == ["run-finished"]  # the others did not stop it
    assert "broken" in (tmp_path / "notify.log").read_text()


def test_observe_never_waits_and_a_flood_is_dropped_with_one_warning(tmp_path: Path) -> None:
    gate, out = tmp_path / "gate", tmp_path / "out"
    wait = f'n=0; while [ ! -e {gate} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; cat >> "{out}"'
    notifier, warnings = make(
        [NotifySpec(("sh", "-c", wait), timeout_s=60)], tmp_path, queue_size=2
    )
    for n in range(10):  # the first command blocks until the gate opens: none of this waits
        notifier.observe(ev.TicketThrottled(ticket=f"T{n}", reason="busy", delay_s=1.0))
    assert len(warnings) == 1 and "dropping new ones" in warnings[0]
    gate.touch()
    notifier.close()
    delivered = [json.loads(line)["ticket"] for line in out.read_text().splitlines()]
    dropped = int(warnings[-1].split()[1])
    assert warnings[-1] == f"notify: {dropped} notification(s) were dropped"
    assert len(delivered) + dropped == 10 and delivered[0] == "T0"
    assert dropped in (7, 8)  # 2 queued, plus the one already running if it had started


def test_close_cancels_what_does_not_end(tmp_path: Path) -> None:
    notifier, warnings = make([NotifySpec(("sleep", "60"), timeout_s=60)], tmp_path)
    notifier.observe(ev.RunFinished(state=RunStatus.COMPLETED, head="abc"))
    notifier.close(timeout=0.2)
    assert any("cancelled at the end of the run" in w for w in warnings)


def test_a_template_that_fails_is_a_warning(tmp_path: Path) -> None:
    notifier, warnings = make([NotifySpec(("echo", "{{ event.nothing.here }}"))], tmp_path)
    notifier.observe(ev.RunFinished(state=RunStatus.COMPLETED, head="abc"))
    notifier.close()
    assert len(warnings) == 1 and "argument '{{ event.nothing.here }}'" in warnings[0]


def test_only_the_events_users_care_about_notify() -> None:
    kinds = [n.kind for e in events() if (n := notification(e, "r", None)) is not None]
    assert kinds == ["ticket-failed", "conflict", "throttled", "budget-reached", "run-finished"]


def test_warnings_after_the_journal_closed_are_not_errors(tmp_path: Path) -> None:
    def closed(message: str) -> None:
        raise RuntimeError("journal closed")

    notifier = Notifier(
        [NotifySpec(("false",))], run_id="r", cwd=tmp_path, log=tmp_path / "n.log", warn=closed
    )
    notifier.observe(ev.RunFinished(state=RunStatus.COMPLETED, head="abc"))
    notifier.close()
    wait_for(lambda: (tmp_path / "n.log").is_file())


# --- the config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "notify: {command: [x]}\n",
            ".gitexec/config.yaml:1:9: error: notify: expected a list of {on: [events], "
            "command: [argv]}, got a mapping",
        ),
        (
            "notify:\n  - on: [ticket-fail]\n    command: [x]\n",
            ".gitexec/config.yaml:2:10: error: notify: item 1: on: unknown event 'ticket-fail' "
            "(did you mean 'ticket-failed'?) (events: run-finished, ticket-failed, conflict, "
            "throttled, budget-reached)",
        ),
        (
            "notify:\n  - on: run-finished\n    command: notify-send hello\n",
            ".gitexec/config.yaml:3:14: error: notify: item 1: command: must be a list of "
            "arguments (argv), e.g. [claude, -p, '{{ prompt }}']; values are never passed "
            "through a shell",
        ),
        (
            "notify:\n  - on: [run-finished]\n",
            ".gitexec/config.yaml:2:5: error: notify: item 1: missing 'command' (an argv list)",
        ),
        (
            "notify:\n  - command: [x]\n    timout: 5s\n",
            ".gitexec/config.yaml:3:5: error: notify: item 1: unknown key 'timout' (did you "
            "mean 'timeout'?)",
        ),
        (
            "notify:\n  - command: [x]\n    timeout: 1h\n",
            ".gitexec/config.yaml:3:14: error: notify: item 1: timeout: must be at most 5m, "
            "got '1h'",
        ),
        (
            "notify:\n  - command: ['{{ message ']\n",
            ".gitexec/config.yaml:2:15: error: notify: item 1: command: invalid template "
            "'{{ message ': unexpected end of template, expected 'end of print statement'.",
        ),
    ],
)
def test_notify_config_errors_name_file_line_and_column(
    tmp_path: Path, config: str, expected: str
) -> None:
    repo = init_repo(tmp_path / "r", {".gitexec/config.yaml": config})
    code, out, err = gitexec(repo, "check")
    assert code == 1, out + err
    assert out.splitlines()[0] == expected


def test_a_valid_notify_section_checks_clean(tmp_path: Path) -> None:
    config = (
        "notify:\n"
        "  - on: [ticket-failed, run-finished, budget-reached]\n"
        '    command: [notify-send, gitexec, "{{ message }}"]\n'
        "  - command: [sh, -c, 'cat > /dev/null']\n"
        "    timeout: 30s\n"
    )
    repo = init_repo(tmp_path / "r", {".gitexec/config.yaml": config})
    code, out, err = gitexec(repo, "check")
    assert code == 0, out + err


def test_a_run_notifies_and_a_failing_notifier_is_only_a_warning(tmp_path: Path) -> None:
    from tests.project import make_project, run_ok, status, ticket_yaml

    out = tmp_path / "notified"
    config = (
        "version: 1\n"
        "notify:\n"
        "  - on: [ticket-failed, run-finished]\n"
        f"    command: {json.dumps([*APPEND, str(out), '{{ message }}'])}\n"
        "  - on: [run-finished]\n"
        "    command: [sh, -c, 'exit 4']\n"
    )
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="exit 1"), "B": ticket_yaml("B", run="echo b > b")},
        config=config,
    )
    code, _, _ = run_ok(repo, "--run-id", "n")
    assert code == 1  # A failed; the failing notifier changes nothing
    got = read(out)
    assert [(k, m) for k, m, _ in got] == [
        ("ticket-failed", "gitexec run n: A failed: agent exited with status 1"),
        ("run-finished", "gitexec run n: failed: 1/2 tickets completed"),
    ]
    assert got[1][2]["metrics"] == {
        "total": 2,
        "completed": 1,
        "failed": 1,
        "conflict": 0,
        "blocked": 0,
        "cancelled": 0,
        "wall_s": got[1][2]["metrics"]["wall_s"],  # type: ignore[index]
        "cost_usd": 0.0,
    }
    warnings = status(repo, "n")["warnings"]
    assert any("notify 'sh' on run-finished exited with status 4" in w for w in warnings)


def test_the_readme_examples_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's desktop and webhook notifications, with stand-ins for notify-send and
    curl that record their arguments."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = next(b for b in readme.split("```yaml\n")[1:] if b.startswith("notify:"))
    parsed = parse_config(".gitexec/config.yaml", block.split("```", 1)[0])
    assert parsed.findings == ()
    desktop, webhook = parsed.config.notify
    assert desktop.on == ("ticket-failed", "run-finished")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("notify-send", "curl"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" -- >> {tmp_path}/{name}\n')
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CHAT_WEBHOOK_URL", "https://chat.example/hooks/T0K3N")
    # The webhook on failures too, to see a message full of shell syntax arrive intact.
    on_failure = NotifySpec(webhook.command, on=("ticket-failed",))
    notifier, warnings = make([desktop, webhook, on_failure], tmp_path)
    tricky = 'it\'s "quoted" $(touch pwned) `touch pwned` \\ done'
    notifier.observe(ev.TicketFinished(ticket="A", state=TicketState.FAILED, reason=tricky))
    notifier.observe(ev.RunFinished(state=RunStatus.FAILED, head="abc"))
    notifier.close()
    assert warnings == []
    calls = (tmp_path / "notify-send").read_text().split("--\n")[:-1]
    assert [c.splitlines() for c in calls] == [
        ["--app-name=gitexec", "gitexec", f"gitexec run r1: A failed: {tricky}"],
        ["--app-name=gitexec", "gitexec", "gitexec run r1: failed"],
    ]
    posts = [c.splitlines() for c in (tmp_path / "curl").read_text().split("--\n")[:-1]]
    assert [p[-1] for p in posts] == ["https://chat.example/hooks/T0K3N"] * 2
    bodies = [json.loads(p[p.index("--data-binary") + 1]) for p in posts]
    assert bodies == [
        {"text": f"gitexec run r1: A failed: {tricky}"},
        {"text": "gitexec run r1: failed"},
    ]
    assert not (tmp_path / "pwned").exists()
