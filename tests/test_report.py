"""Reports (JUnit, Markdown) from real runs and from synthesized run states."""

from __future__ import annotations

import datetime
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from junitparser import Error, Failure, JUnitXml, Skipped
from lxml import etree
from markdown_it import MarkdownIt
from markdown_it.token import Token

from gitexec import secrets
from gitexec.fields import format_duration
from gitexec.journal import EngineLock
from gitexec.report import (
    Outcome,
    Redactor,
    RunReport,
    clean_text,
    is_secret_name,
    outcome,
    tail_of,
)
from gitexec.report.junit import junit_xml, write_junit
from gitexec.report.markdown import (
    SUMMARY_LIMIT,
    code_block,
    conflict_hunks,
    md,
    render_markdown,
)
from gitexec.runstate import RunState, RunStatus, TicketRun
from gitexec.tickets import TicketState
from tests.project import gitexec, make_project, run_ok, ticket_yaml
from tests.project import status as run_status

SECRET = "hunter2-sup3r-s3cret-value"

# What the failing agent prints: colours, a cursor move, an OSC title, NUL, a lone ESC, a
# UTF-8-encoded lone surrogate, invalid UTF-8, a carriage-return progress bar, a secret,
# and text that would be a workflow command or break out of XML/Markdown.
GARBAGE = (
    r"printf '\033[1;31mred alert\033[0m \033[2K\033]0;title\007nul:\000 esc:\033\n"
    r"surrogate:\355\240\200 invalid:\377\376\300 end\n'; "
    r"printf 'progress 10%%\rprogress 50%%\rprogress 100%%\n'; "
    r"""printf 'token=%s\n' "$DEPLOY_TOKEN"; """
    r"echo '::error::from the log ]]> </system-out> <script>x</script> ``` </details>'; "
    "exit 3"
)


@dataclass(frozen=True)
class MixedRun:
    repo: Path
    run_id: str

    @property
    def state_dir(self) -> Path:
        return self.repo / ".git" / "gitexec"

    def report(self) -> RunReport:
        return RunReport.load(self.state_dir, self.run_id)


@pytest.fixture
def mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MixedRun:
    """A real run with a completed, a conflicting, a failing, a blocked and an erroring ticket."""
    monkeypatch.setenv("DEPLOY_TOKEN", SECRET)
    config = "version: 1\nmerge:\n  on_conflict: [rules, fail]\n"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", "First writer", run="sleep 0.2; echo from-a > shared.txt"),
            "B": ticket_yaml("B", "Second writer", run="sleep 0.8; echo from-b > shared.txt"),
            "C": ticket_yaml("C", "Noisy <failure> | 100% broken", run=GARBAGE),
            "D": ticket_yaml("D", "Needs C", depends_on=["C"], run="true"),
            "E": ticket_yaml("E", "Missing tool", run="no-such-tool-gitexec --x"),
            "F": ticket_yaml("F", "<script>alert(1)</script> | a **b** [c](http://x)", run="true"),
        },
        config=config,
        files={"shared.txt": "base\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "mix", "--jobs", "4")
    assert code == 1, out + err
    return MixedRun(repo, "mix")


def statuses(report: RunReport) -> dict[str, str]:
    return {tid: t.status.value for tid, t in report.state.tickets.items()}


def writer_states(report: RunReport) -> tuple[str, str]:
    """(the writer that completed, the one that conflicted): A and B race for shared.txt."""
    s = statuses(report)
    assert sorted([s["A"], s["B"]]) == ["completed", "conflict"], s
    return ("A", "B") if s["A"] == "completed" else ("B", "A")


# --- JUnit ---------------------------------------------------------------------------------


def test_junit_counts_parsed_by_junitparser_and_lxml(mixed: MixedRun, tmp_path: Path) -> None:
    report = mixed.report()
    done, conflicted = writer_states(report)
    others = {tid: st for tid, st in statuses(report).items() if tid not in ("A", "B")}
    assert others == {"C": "failed", "D": "blocked", "E": "failed", "F": "completed"}
    path = write_junit(report, tmp_path / "out" / "junit.xml")

    xml = JUnitXml.fromfile(str(path))
    cases = {case.name.split(":")[0]: case for suite in xml for case in suite}
    assert sorted(cases) == ["A", "B", "C", "D", "E", "F"]
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (6, 1, 2, 1)
    assert cases[done].is_passed and cases["F"].is_passed
    assert isinstance(cases["C"].result[0], Failure)
    assert cases["C"].result[0].message == "agent exited with status 3"
    assert isinstance(cases[conflicted].result[0], Error)
    assert cases[conflicted].result[0].type == "conflict"
    assert isinstance(cases["E"].result[0], Error)  # the agent could not even start
    assert cases["E"].result[0].type == "agent-error"
    assert isinstance(cases["D"].result[0], Skipped)
    assert cases["D"].result[0].message == "dependency C failed"

    root = etree.parse(str(path), etree.XMLParser(recover=False)).getroot()
    assert root.tag == "testsuites"
    assert [int(root.get(k)) for k in ("tests", "failures", "errors", "skipped")] == [6, 1, 2, 1]
    groups = {t.group for t in report.state.tickets.values()}
    suites = root.findall("testsuite")
    assert {s.get("name") for s in suites} == {f"gitexec.{g}" for g in groups}
    for suite in suites:
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["gitexec.run"] == "mix"
        assert props["gitexec.base"] == report.state.base
        assert props["gitexec.head"] == report.state.head
        datetime.datetime.fromisoformat(suite.get("timestamp").replace("Z", "+00:00"))
    for case in root.iter("testcase"):
        tid = case.get("name").split(":")[0]
        assert case.get("classname") == f"gitexec.{report.state.tickets[tid].group}"
        assert case.get("file") == f".gitexec/tickets/{tid}.yaml"
        assert re.fullmatch(r"\d+\.\d{3}", case.get("time")), case.attrib  # also when 0
    blocked = next(c for c in root.iter("testcase") if c.get("name").startswith("D:"))
    assert blocked.get("time") == "0.000"
    f_case = next(c for c in root.iter("testcase") if c.get("name").startswith("F:"))
    assert f_case.get("name") == "F: <script>alert(1)</script> | a **b** [c](http://x)"
    conflict = next(c for c in root.iter("testcase") if c.get("name").startswith(conflicted))
    text = conflict.find("error").text
    assert "conflict in shared.txt" in text and f"collided with {done}" in text
    assert "<<<<<<<" in text and ">>>>>>>" in text


def test_junit_is_well_formed_whatever_the_agent_printed(mixed: MixedRun) -> None:
    raw = (mixed.state_dir / "runs" / "mix" / "logs" / "C.log").read_bytes()
    assert b"\x00" in raw and b"\x1b[" in raw and b"\xff" in raw and b"\xed\xa0\x80" in raw
    assert SECRET.encode() not in raw  # redacted as the log was written

    data = junit_xml(mixed.report()).encode("utf-8")
    root = etree.fromstring(data, etree.XMLParser(recover=False))  # strict: raises if not
    failing = next(c for c in root.iter("testcase") if c.get("name").startswith("C:"))
    out = failing.find("system-out").text
    assert "red alert" in out and "\x1b" not in out and "[1;31m" not in out
    assert "title" not in out  # the OSC window title is an escape, not output
    assert (
        "nul:\ufffd esc:\ufffd\n" in out and "invalid:\ufffd" in out and "surrogate:\ufffd" in out
    )
    assert "progress 100%" in out and "progress 10%" not in out
    assert "::error::from the log ]]> </system-out> <script>x</script>" in out
    assert failing.find("failure").text.endswith(out.split("\n")[-1])
    assert SECRET not in data.decode("utf-8")
    assert "token=***" in out


def test_junit_works_around_junit_xml_gaps() -> None:
    state = synth_state(3)
    a, b, c = state.tickets.values()
    a.agent_s = 0.0  # junit-xml drops time="0"
    b.status, b.reason = TicketState.FAILED, None  # junit-xml drops a failure with no message
    c.title = "lone \ud800 surrogate, \x07 bell, \x1b[31mred\x1b[0m, \ufffe"
    c.status, c.reason = TicketState.CANCELLED, "run stopped \udfff"
    data = junit_xml(RunReport(state, redactor=Redactor())).encode("utf-8")
    root = etree.fromstring(data, etree.XMLParser(recover=False))
    cases = list(root.iter("testcase"))
    assert cases[0].get("time") == "0.000"
    assert cases[1].find("failure") is not None
    assert cases[1].find("failure").get("message") == "ticket failed"
    assert root.get("failures") == "1" and root.get("skipped") == "1"
    assert cases[2].get("name") == "T-00002: lone \ufffd surrogate, \ufffd bell, red, \ufffd"
    assert cases[2].find("skipped").get("message") == "run stopped \ufffd"


# --- cleaning and redaction ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (b"\x1b[1;32mok\x1b[0m", "ok"),
        (b"a\x00b", "a\ufffdb"),
        (b"\xff\xfe", "\ufffd\ufffd"),
        (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),
        ("lone \ud800", "lone \ufffd"),
        (b"tab\tline\r\nnext\n", "tab\tline\nnext\n"),
        (b"1%\r50%\r100%\n", "100%\n"),
        (b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        (b"\x1b", "\ufffd"),
        ("\ufffe\uffff\x7f\x85", "\ufffd\ufffd\ufffd\x85"),
        ("emoji \U0001f600", "emoji \U0001f600"),
    ],
)
def test_clean_text(raw: str | bytes, clean: str) -> None:
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("GITHUB_TOKEN", True),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True),
        ("ssh_key", True),
        ("NPM_AUTH", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("OPENAI_APIKEY", True),
        ("SLACK_WEBHOOK_URL", True),
        ("SENTRY_DSN", True),
        ("analytics_dsn", True),
        ("DISCORD_WEBHOOKS", True),
        ("TEAMS_WEBHOOK_ENDPOINT", True),
        ("GIT_AUTHOR_NAME", False),
        ("MONKEY", False),
        ("KEYBOARD_LAYOUT", False),
        ("PWD", False),
        ("HOME", False),
        ("DSNAME", False),
        ("WEB_HOOKAH", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redactor() -> None:
    redact = Redactor.from_environ(
        {
            "API_TOKEN": "abcdef123456",
            "MULTI_SECRET": "line-one-secret\nline-two-secret",
            "SHORT_KEY": "ab",  # too short to redact without destroying logs
            "FLAG_SECRET": "true",
            "HOME": "/home/user-secret-free",
        }
    )
    assert redact("x abcdef123456 y") == "x *** y"
    assert redact("line-two-secret") == "***"
    assert redact("ab true /home/user-secret-free") == "ab true /home/user-secret-free"
    assert redact("https://bob:pa55word@example.com/x") == "https://bob:***@example.com/x"
    token = "ghp_" + "a1B2" * 9
    assert redact(f"token {token} end") == "token *** end"


def test_log_tail_of_a_huge_log(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    with log.open("wb") as f:
        for i in range(200_000):
            f.write(f"line {i} \x1b[33mwarn\x1b[0m\n".encode())
    tail = tail_of(log, max_lines=5, max_chars=10_000, redact=Redactor())
    assert tail.split("\n") == [
        "[... earlier output not shown ...]",
        *(f"line {i} warn" for i in range(199_995, 200_000)),
    ]
    assert len(tail_of(log, max_lines=1000, max_chars=100, redact=Redactor())) < 150
    assert tail_of(tmp_path / "missing.log", max_lines=5, max_chars=100, redact=Redactor()) == ""


def test_outcomes() -> None:
    t = TicketRun("A", "t", "f", "shell")
    cases = [
        (TicketState.COMPLETED, None, Outcome.PASSED),
        (TicketState.FAILED, "agent exited with status 1", Outcome.FAILURE),
        (TicketState.FAILED, "agent timed out after 5s", Outcome.FAILURE),
        (TicketState.FAILED, "validation 'pytest' exited 1", Outcome.FAILURE),
        (TicketState.FAILED, "agent exited with status 127", Outcome.ERROR),
        (TicketState.FAILED, "internal error: OSError: x", Outcome.ERROR),
        (TicketState.FAILED, "git failed in slot-1:\n...", Outcome.ERROR),
        (TicketState.FAILED, "worktree setup command 'npm ci' exited 1 in slot-1", Outcome.ERROR),
        (TicketState.FAILED, "prompt template: 'x' is undefined", Outcome.ERROR),
        (TicketState.FAILED, None, Outcome.FAILURE),
        (TicketState.CONFLICT, "merge conflict in a", Outcome.ERROR),
        (TicketState.BLOCKED, "dependency A failed", Outcome.SKIPPED),
        (TicketState.CANCELLED, "run stopped", Outcome.SKIPPED),
        (TicketState.RUNNING, None, Outcome.SKIPPED),
    ]
    for status, reason, expected in cases:
        t.status, t.reason = status, reason
        assert outcome(t) is expected, (status, reason)


# --- Markdown ------------------------------------------------------------------------------


def markdown_parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable("table")


def tables(tokens: list[Token]) -> list[list[list[Token]]]:
    """Each table as rows of cell inline tokens (header row first)."""
    out: list[list[list[Token]]] = []
    row: list[Token] = []
    for i, tok in enumerate(tokens):
        if tok.type == "table_open":
            out.append([])
        elif tok.type == "tr_open":
            row = []
        elif tok.type in ("th_open", "td_open"):
            row.append(tokens[i + 1])
        elif tok.type == "tr_close":
            out[-1].append(row)
    return out


def cell_text(inline: Token) -> str:
    children = inline.children or []
    assert not [c for c in children if c.type == "html_inline"], inline.content
    return "".join(c.content for c in children if c.type in ("text", "code_inline"))


def ticket_table(text: str) -> list[list[str]]:
    found = [t for t in tables(markdown_parser().parse(text)) if cell_text(t[0][0]) == "Ticket"]
    assert len(found) == 1
    return [[cell_text(c) for c in row] for row in found[0]]


def fences(text: str, info: str) -> list[str]:
    return [
        t.content for t in markdown_parser().parse(text) if t.type == "fence" and t.info == info
    ]


def test_markdown_from_a_real_run(mixed: MixedRun) -> None:
    report = mixed.report()
    done, conflicted = writer_states(report)
    text = render_markdown(report)
    assert text.startswith("## ❌ gitexec run mix: failed")

    rows = ticket_table(text)
    assert rows[0][:8] == [
        "Ticket",
        "Title",
        "Agent",
        "Status",
        "Attempts",
        "Duration",
        "Cost",
        "Commit",
    ]
    assert rows[0][8:] == ["CPU", "Memory"]  # what the agents used (measured in a real run)
    by_id = {r[0]: r for r in rows[1:]}
    assert sorted(by_id) == ["A", "B", "C", "D", "E", "F"]
    assert by_id["F"][1] == "<script>alert(1)</script> | a **b** [c](http://x)"
    assert by_id["C"][1] == "Noisy <failure> | 100% broken"
    assert by_id["C"][3] == "❌ failed" and by_id[conflicted][3] == "💥 conflict"
    assert by_id[done][6] == "-"  # a shell agent reports no cost
    assert re.fullmatch(r"[0-9a-f]{10}", by_id[done][7])

    analytics = next(t for t in tables(markdown_parser().parse(text)) if len(t[0]) == 4)
    names = [cell_text(r[0]) for r in analytics[1:]]
    assert names[:4] == [
        "Parallelism factor",
        "Resource utilization",
        "Coordination efficiency",
        "Conflicts auto-resolved",
    ]

    (gantt,) = fences(text, "mermaid")[:1]
    assert gantt.startswith("gantt\n") and "section slot" in gantt
    assert all(f"    {tid} :" in gantt for tid in "ABCEF")
    graph = fences(text, "mermaid")[1]
    assert graph.startswith("graph LR\n")
    assert "class " in graph and "classDef failed" in graph and "classDef blocked" in graph
    assert "#lt;script#gt;" in graph and "<script" not in graph

    html = markdown_parser().render(text)
    assert "<script" not in html
    assert html.count("<details>") == 3  # C (failed), E (agent error), the conflict
    details = text[text.index("### Failures and conflicts") :]
    assert f"Conflict in **shared.txt**, collided with {done}:" in details
    conflict_block = next(f for f in fences(details, "") if "<<<<<<<" in f)
    assert conflict_block.startswith("@@ line 1 @@\n<<<<<<< integration")
    assert "red alert" in details and "token=***" in details
    assert SECRET not in text


def test_markdown_escapes_hostile_titles_and_logs(tmp_path: Path) -> None:
    hostile = [
        "<script>alert('x')</script>",
        "a | b | c",
        "pipe in `code | span`",
        "**bold** _it_ [link](javascript:alert(1)) ![img](x.png)",
        "<img src=x onerror=alert(1)>",
        "trailing backslash \\",
        "line\nbreak",
        "@someone #123 &amp; &lt;b&gt;",
    ]
    state = synth_state(len(hostile), failed_every=2)
    for t, title in zip(state.tickets.values(), hostile, strict=True):
        t.title = title
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    for t in state.tickets.values():
        (logs / f"{t.id}.log").write_bytes(b"```\n</details>\n<script>bad()</script>\n~~~~\n")
    text = render_markdown(RunReport(state, tmp_path / "run", redactor=Redactor()))
    rows = ticket_table(text)[1:]
    assert len(rows) == len(hostile)
    assert all(len(r) == 8 for r in rows)
    assert [r[1] for r in rows] == [" ".join(h.split()) for h in hostile]
    html = markdown_parser().render(text)
    assert "<script" not in html and "<img" not in html and "<a " not in html
    assert html.count("<details>") == html.count("</details>") == 4
    # the log's own ``` and </details> stay inside its code block
    assert text.count("````\n```\n</details>") == 4


def test_markdown_of_10000_tickets_stays_under_1_mib(tmp_path: Path) -> None:
    state = synth_state(10_000, failed_every=7, title_len=90)
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    big = ("x" * 150 + "\n").encode() * 600  # 90 KB of log per failed ticket
    for t in state.tickets.values():
        if t.status is TicketState.FAILED:
            (logs / f"{t.id}.log").write_bytes(big)
    start = time.monotonic()
    text = render_markdown(RunReport(state, tmp_path / "run", redactor=Redactor()))
    elapsed = time.monotonic() - start
    size = len(text.encode("utf-8"))
    assert size < SUMMARY_LIMIT, size
    rows = ticket_table(text)[1:]
    assert [r[0] for r in rows] == list(state.tickets)  # every row, in plan order
    assert "shortened to keep this report under 1 MiB" in text
    print(f"10,000 tickets: {size} bytes in {elapsed:.1f}s")


def test_markdown_of_a_small_run_is_not_shortened(tmp_path: Path) -> None:
    state = synth_state(20, failed_every=3)
    text = render_markdown(RunReport(state, tmp_path, redactor=Redactor()))
    assert "shortened" not in text
    assert len(fences(text, "mermaid")) == 2


def test_markdown_big_dag_draws_plan_groups(tmp_path: Path) -> None:
    state = synth_state(2_000, failed_every=50)
    text = render_markdown(RunReport(state, tmp_path, redactor=Redactor()))
    gantt, graph = fences(text, "mermaid")
    assert len(graph) < 50_000 and len(gantt) < 50_000
    assert 'g0["group 1: 100 tickets' in graph and "t1999" not in graph


def test_user_template_extends_the_builtin(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="echo a > a.txt")},
        config="version: 1\nreport:\n  template: ci/report.md.j2\n",
        files={
            "ci/report.md.j2": (
                '{% extends "gitexec/report.md.j2" %}\n'
                "{% block verdict %}# Custom: {{ run.id|md }} {{ tickets|length }}\n{% endblock %}\n"
                "{% block diagrams %}{% endblock %}\n"
            )
        },
    )
    code, out, err = run_ok(repo, "--run-id", "u")
    assert code == 0, out + err
    from gitexec.commands.report import report
    from gitexec.workspace import Workspace

    target = tmp_path / "out.md"
    assert report(Workspace.find(repo), run_id="u", junit=None, markdown=str(target)) == 0
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Custom: u 1\n")
    assert "### Tickets" in text and "mermaid" not in text


def test_broken_user_template_is_a_clear_error(tmp_path: Path) -> None:
    from gitexec.commands.report import report
    from gitexec.errors import UserError
    from gitexec.workspace import Workspace

    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="true")},
        config="version: 1\nreport:\n  template: bad.md.j2\n",
        files={"bad.md.j2": "line one\n{% for x in %}\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "b")
    assert code == 0, out + err
    with pytest.raises(UserError, match=r"bad\.md\.j2:2: report template"):
        report(Workspace.find(repo), run_id="b", junit=None, markdown=str(tmp_path / "x.md"))


# --- the report command on runs in every state ----------------------------------------------


def journal_variant(mixed: MixedRun, run_id: str, *, finish: str | None) -> None:
    """A copy of the mixed run's journal cut before its end: crashed/stopped/running."""
    src = mixed.state_dir / "runs" / mixed.run_id
    dst = mixed.state_dir / "runs" / run_id
    (dst / "logs").mkdir(parents=True)
    for log in (src / "logs").iterdir():
        (dst / "logs" / log.name).write_bytes(log.read_bytes())
    events = [json.loads(line) for line in (src / "journal.jsonl").read_text().splitlines()]
    cut = next(i for i, e in enumerate(events) if e["event"] == "ticket-finished")
    kept = events[:cut]
    if finish is not None:
        kept.append({**events[-1], "event": "run-finished", "state": finish})
    (dst / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))


@pytest.mark.parametrize("variant", ["finished", "crashed", "stopped", "running"])
def test_report_command_for_runs_in_every_state(
    mixed: MixedRun, tmp_path: Path, variant: str
) -> None:
    from gitexec.commands.report import report
    from gitexec.workspace import Workspace

    rid = "mix"
    if variant != "finished":
        rid = f"mix-{variant}"
        journal_variant(mixed, rid, finish="stopped" if variant == "stopped" else None)
    ws = Workspace.find(mixed.repo)
    junit, markdown = tmp_path / "j" / "junit.xml", tmp_path / "m" / "report.md"
    for parent in (junit.parent, markdown.parent):
        parent.mkdir()  # outside the repository, report directories are not made for us
    if variant == "running":
        with EngineLock(mixed.state_dir).held(rid):
            assert report(ws, run_id=None, junit=str(junit), markdown=str(markdown)) == 0
    else:
        assert report(ws, run_id=rid, junit=str(junit), markdown=str(markdown)) == 0
    root = etree.parse(str(junit), etree.XMLParser(recover=False)).getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    expected = {"finished": "failed", "crashed": "crashed", "stopped": "stopped"}
    assert props["gitexec.status"] == expected.get(variant, "running")
    assert props["gitexec.run"] == rid
    assert int(root.get("tests")) == 6
    text = markdown.read_text(encoding="utf-8")
    assert len(ticket_table(text)) == 7
    if variant == "crashed":
        assert "git exec resume --run mix-crashed" in text
    if variant != "finished":
        unfinished = [
            s.get("message") for s in root.iter("skipped") if s.get("message", "").startswith("not")
        ]
        assert unfinished, junit.read_text()


def test_report_command_prints_markdown_without_files(mixed: MixedRun) -> None:
    from gitexec.commands.report import report
    from gitexec.workspace import Workspace
    from tests.project import captured

    with captured() as (out, _err):
        assert report(Workspace.find(mixed.repo), run_id=None, junit=None, markdown=None) == 0
    assert out.getvalue().startswith("## ❌ gitexec run mix")


def test_report_paths_are_relative_to_the_starting_directory(mixed: MixedRun) -> None:
    from gitexec.commands.report import write_reports
    from gitexec.workspace import Workspace

    sub = mixed.repo / "sub"
    sub.mkdir()
    written = write_reports(
        Workspace.find(sub), "mix", junit="reports/j.xml", markdown="reports/r.md", github=False
    )
    assert written.junit == (sub / "reports" / "j.xml").resolve()
    assert written.junit.is_file() and written.markdown is not None
    assert written.markdown.is_file()


# --- units ---------------------------------------------------------------------------------


def test_md_and_code_block_escaping() -> None:
    import html as html_mod

    parser = markdown_parser()
    for text in ["<b>x</b>", "a|b", "*x*", "[a](b)", "`x`", "\\", "&amp;", "# h"]:
        html = parser.render(f"| h |\n|---|\n| {md(text)} |\n")
        assert "<td>" in html
        cell = html.split("<td>")[1].split("</td>")[0]
        assert html_mod.unescape(cell) == text, (text, cell)
    block = code_block("a\n````\nb")
    assert block.startswith("`````\n") and block.endswith("\n`````")


def test_conflict_hunks_keep_only_the_conflicts() -> None:
    lines = [f"l{i}" for i in range(40)]
    lines[10:10] = [
        "<<<<<<< integration",
        "ours",
        "||||||| base",
        "b",
        "=======",
        "theirs",
        ">>>>>>> T",
    ]
    text = conflict_hunks("\n".join(lines))
    assert text.startswith("@@ line 8 @@\nl7\nl8\nl9\n<<<<<<< integration")
    assert text.endswith(">>>>>>> T\nl10\nl11\nl12")
    assert conflict_hunks("CONFLICT (binary): x") == "CONFLICT (binary): x"


# --- synthesized runs ------------------------------------------------------------------------

T0 = 1_767_225_600.0  # 2026-01-01


def synth_state(
    n: int, *, failed_every: int = 0, title_len: int = 30, status: RunStatus = RunStatus.FAILED
) -> RunState:
    """A finished run of `n` tickets in groups of 100, chained by tens, on 8 slots."""
    state = RunState(
        "synth",
        base="a" * 40,
        base_rev="main",
        integration="refs/heads/gitexec/synth",
        head="b" * 40,
        jobs=8,
        status=status,
        started_at=T0,
        finished_at=T0 + n,
        last_event_at=T0 + n,
    )
    groups: dict[int, list[str]] = {}
    for i in range(n):
        tid = f"T-{i:05d}"
        group = i // 100 + 1
        t = TicketRun(
            tid,
            (f"Ticket {i} " + "lorem ipsum dolor " * 10)[:title_len],
            f".gitexec/tickets/{tid}.yaml",
            "shell",
            depends_on=(f"T-{i - 1:05d}",) if i % 10 else (),
            group=group,
            status=TicketState.COMPLETED,
            attempts=1,
            slot=i % 8 + 1,
            started_at=T0 + i,
            finished_at=T0 + i + 0.5,
            agent_s=0.5,
            commit=f"{i:040x}",
            merge_commit=f"{i + 1:040x}",
        )
        if failed_every and i % failed_every == 1:
            t.status, t.reason, t.merge_commit = (
                TicketState.FAILED,
                "agent exited with status 1",
                None,
            )
        elif failed_every and i % failed_every == 2 and i % 3 == 0:
            t.status, t.reason = TicketState.CONFLICT, "merge conflict in shared.txt"
            t.conflicts, t.conflict_with = ["shared.txt"], [f"T-{i - 1:05d}"]
            t.conflict_text = {"shared.txt": "<<<<<<< integration\na\n=======\nb\n>>>>>>> T\n"}
        elif failed_every and i % failed_every == 3:
            t.status, t.reason, t.attempts = TicketState.BLOCKED, "dependency failed", 0
        state.tickets[tid] = t
        groups.setdefault(group, []).append(tid)
    state.groups = [groups[g] for g in sorted(groups)]
    return state


# --- secrets by shape, streaming, bidi -------------------------------------------------------

SHAPED_SECRETS = [
    "ghp_" + "a1B2" * 9,
    "gho_" + "Z9y8" * 9,
    "github_pat_11ABCDEFG0" + "x1" * 20,
    "xoxb-123456789012-abcdefABCDEF",
    "xoxp-1-2-3-abcdef0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "sk-proj-" + "Ab1" * 10,
    "sk-ant-api03-" + "Zz9" * 10,
    "glpat-" + "x1Y2" * 6,
]


def test_redaction_lives_in_secrets_and_stays_importable_from_report() -> None:
    assert Redactor is secrets.Redactor and is_secret_name is secrets.is_secret_name


@pytest.mark.parametrize("secret", SHAPED_SECRETS)
def test_token_shapes_are_redacted_from_any_source(secret: str) -> None:
    assert Redactor()(f"x {secret} y") == "x *** y"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("https://bob:pa55word@example.com/x", "https://bob:***@example.com/x"),
        ("https://x-access-token:abc@github.com", "https://x-access-token:***@github.com"),
        ("https://0123456789abcdef0123@o1.ingest.sentry.io/5", "https://***@o1.ingest.sentry.io/5"),
        ("POST https://hooks.slack.com/services/T0ABC/B0DEF/0123456789abcdef", "POST https://***"),
        ("Authorization: Bearer abcdefghij0123456789", "Authorization: Bearer ***"),
        ("authorization: token 0123456789abcdef0123", "authorization: token ***"),
        # not secrets
        ("ssh://git@github.com/x.git", "ssh://git@github.com/x.git"),
        ("task-management-and-overview-2024", "task-management-and-overview-2024"),
        ("the bearer of news", "the bearer of news"),
        ("risk-1234567890123456789012345", "risk-1234567890123456789012345"),
    ],
)
def test_credentials_in_urls_and_headers(text: str, redacted: str) -> None:
    assert Redactor()(text) == redacted


def test_redactor_from_an_explicit_environment() -> None:
    env = {
        "SLACK_WEBHOOK_URL": "https://example.org/hook/abc",
        "SENTRY_DSN": "dsn-value-1",
        "PATH": "/bin",
    }
    redact = Redactor.from_environ(env)
    assert redact("a https://example.org/hook/abc b dsn-value-1 c /bin") == "a *** b *** c /bin"
    assert redact.redact_bytes(b"\xff dsn-value-1 \xfe") == b"\xff *** \xfe"


def test_line_redactor_finds_secrets_split_across_chunks() -> None:
    secret = "s3cret-value-that-is-long"
    stream = Redactor.of([secret]).stream()
    data = f"first line\nsecond {secret} line\nlast {secret}".encode()
    out = b"".join(stream.feed(data[i : i + 3]) for i in range(0, len(data), 3)) + stream.flush()
    assert out == b"first line\nsecond *** line\nlast ***"


def test_line_redactor_bounds_a_line_without_newlines() -> None:
    secret = "tok-" + "q" * 40
    stream = Redactor.of([secret]).stream()
    chunk = (b"word " * 1000 + secret.encode() + b" ") * 20
    written = [stream.feed(chunk) for _ in range(10)]
    assert all(len(w) < 300_000 for w in written) and sum(map(len, written)) > 0
    out = b"".join(written) + stream.flush()
    assert secret.encode() not in out and out.count(b"***") == 200


def test_bidi_controls_are_stripped_from_report_text() -> None:
    assert clean_text("safe\u202etxt.exe\u2066x\u2069") == "safetxt.exex"


def test_secrets_and_bidi_never_reach_reports_or_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    webhook = "https://hooks.example.org/services/T00/B00/abc123"
    dsn = "https://public@sentry.example.org/42"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", webhook)
    monkeypatch.setenv("SENTRY_DSN", dsn)
    token = SHAPED_SECRETS[0]
    run = (
        f'echo "hook $SLACK_WEBHOOK_URL dsn $SENTRY_DSN token {token}"; '
        "echo https://deploy:hunter2@git.example.org/r.git; exit 1"
    )
    title = "Invoice \u202egnp.exe"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", title, run=run)})
    code, out, err = gitexec(repo, "check")
    assert code == 0
    assert out.splitlines()[0] == (
        ".gitexec/tickets/A.yaml:2:8: warning: title: bidirectional control character(s) "
        "U+202E removed (they make text display differently from what it is)"
    )
    code, out, err = run_ok(repo, "--run-id", "r1", "--markdown", "report.md")
    assert code == 1, out + err
    markdown = (repo / "report.md").read_text()
    assert "hook *** dsn *** token ***" in markdown and "https://deploy:***@" in markdown
    code, status_out, _ = gitexec(repo, "status", "--run", "r1")
    code, report_out, _ = gitexec(repo, "report", "--run", "r1")
    for text in (out, err, markdown, status_out, report_out):
        assert (
            webhook not in text and dsn not in text and token not in text and "hunter2" not in text
        )
        assert "\u202e" not in text
    assert "Invoice gnp.exe" in markdown


# --- Markdown escaping: only what Markdown needs ---------------------------------------------


@settings(max_examples=400, deadline=None)
@given(text=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_md_round_trips_in_table_cells_and_list_items(text: str) -> None:
    """Whatever the text, it renders as itself: no HTML, link, emphasis or block of its own."""
    import html as html_mod

    parser = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    expected = " ".join(text.split())
    cell_html = parser.render(f"| h |\n|---|\n| {md(text)} |\n")
    cell = cell_html.split("<td>")[1].split("</td>")[0] if "<td>" in cell_html else ""
    assert "<" not in cell and html_mod.unescape(cell) == expected, (text, md(text), cell_html)
    item_html = parser.render(f"- {md(text)}\n")
    inner = item_html.removeprefix("<ul>\n<li>").removesuffix("</li>\n</ul>\n")
    assert "<" not in inner and html_mod.unescape(inner) == expected, (text, md(text), item_html)


@pytest.mark.parametrize(
    "text",
    [
        "failed: 8 of 12 tickets completed; 1 failed",
        "gitexec/r1",
        ".gitexec/tickets/B.yaml",
        "0.94× (min of slots and work ÷ critical path)",
        "snake_case_name and auto-resolved 28%",
        "#1 fix, 1.5 s, (a) {b}",
    ],
)
def test_md_leaves_ordinary_text_alone(text: str) -> None:
    assert md(text) == text


def test_markdown_report_reads_well_raw_and_a_failed_rerun_shows_no_empty_diff(
    tmp_path: Path,
) -> None:
    """A conflict whose rerun failed: no empty diff block, no 'failed (failed)'; the raw
    file has no escapes where Markdown needs none."""
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", "First: writer; a/b", run="sleep 0.2; echo from-a > shared.txt"),
            "B": ticket_yaml(
                "B",
                "Second writer",
                run='sleep 0.8; test -z "$GITEXEC_CONFLICT_FILES" || exit 1; echo b > shared.txt',
            ),
        },
        config="version: 1\nmerge:\n  on_conflict: [rules, rerun, fail]\n",
        files={"shared.txt": "base\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "r1", "--markdown", "report.md")
    assert code == 1, out + err
    text = (repo / "report.md").read_text()
    assert text.startswith("## ❌ gitexec run r1: failed: 1 of 2 tickets completed; 1 failed\n")
    assert "on gitexec/r1 ·" in text and "| A | First: writer; a/b | shell |" in text
    assert re.search(r"\\[:;/.]", text) is None
    details = text[text.index("### Failures and conflicts") :]
    assert "failed (failed)" not in details and ": failed, agent exited with status 1" in details
    assert (
        "Conflict in **shared.txt**, collided with A; the ticket then ran again on the merged "
        "result.\n" in details
    )
    assert "```\n\n```" not in details
    assert [f for f in fences(details, "") if not f.strip()] == []


# --- gate time -------------------------------------------------------------------------------


def test_a_run_that_was_mostly_its_gate_is_measured_with_the_gate(tmp_path: Path) -> None:
    # The agent works for 3 s, the integration gate for 6 s: a green run, mostly gate.
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="sleep 3; echo a > a")},
        config='version: 1\njobs: 1\ngates:\n  integration: ["sleep 6"]\n',
    )
    code, out, err = run_ok(repo, "--run-id", "g", "--markdown", "m.md")
    assert code == 0, out + err
    m = run_status(repo, "g")["metrics"]
    assert m["gate_runs"] == 1
    assert m["gate_s"] >= 6.0  # the gate slept that long
    assert 0 < m["gate_only_s"] <= m["gate_s"] < m["wall_s"]
    assert m["parallelism_factor"] > 0 and m["resource_utilization"] > 0
    assert f"; gates {format_duration(m['gate_s'])})" in out.splitlines()[0]
    code, text, _ = gitexec(repo, "status", "--run", "g")
    assert f", gates {format_duration(m['gate_s'])}" in text
    markdown = (repo / "m.md").read_text()
    rows = {
        line.split("|")[1].strip(): line
        for line in markdown.splitlines()
        if line.startswith("| ") and line.count("|") == 5
    }
    assert rows["Gate time"].startswith(
        f"| Gate time | {format_duration(m['gate_s'])} in 1 run(s) |"
    )
    # Slots cannot work while only the gate runs: that time is no shortfall of theirs.
    for name in ("Parallelism factor", "Resource utilization"):
        assert rows[name].endswith("| ✅ |"), rows[name]
        assert "| 0× |" not in rows[name] and "| 0% |" not in rows[name]
    assert f"(gates {format_duration(m['gate_s'])})" in markdown
    timeline = markdown.split("### Timeline", 1)[1].split("```", 2)[1]
    assert "    section gates\n    gate A :done," in timeline
