"""`git exec report` (and `run --junit/--markdown`): reports from a run's journal.

Works for running, paused, stopped, crashed and finished runs alike: the journal is the
truth, and the reports are only views of it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gitexec.config import CONFIG_FILE, parse_config
from gitexec.errors import EXIT_OK, UserError
from gitexec.repopath import RepositoryPathError, repository_file
from gitexec.report import RunReport
from gitexec.workspace import Workspace


@dataclass(frozen=True)
class Written:
    """What `write_reports` produced (absolute paths; None: not asked for)."""

    junit: Path | None
    markdown: Path | None


def report(
    ws: Workspace,
    *,
    run_id: str | None,
    junit: str | None,
    markdown: str | None,
    github: bool | None = None,
) -> int:
    """Write the requested reports of a run (default: the live run, else the newest).

    With neither file asked for, the Markdown report goes to stdout. Inside GitHub Actions
    (or with `github=True`) the run is also published: summary, outputs, annotations.
    """
    from gitexec.commands.status import pick_run

    rid = pick_run(ws, run_id)
    data = load(ws, rid)
    if junit is None and markdown is None:
        from gitexec.report.markdown import render_markdown

        sys.stdout.write(render_markdown(data, template=user_template(ws)))
    written = _write(ws, data, junit=junit, markdown=markdown, github=github, stream=None)
    for path in (written.junit, written.markdown):
        if path is not None:
            print(f"wrote {path}")
    return EXIT_OK


def write_reports(
    ws: Workspace,
    run_id: str,
    *,
    junit: str | None,
    markdown: str | None,
    github: bool | None = None,
    stream: TextIO | None = None,
) -> Written:
    """Write a run's JUnit and Markdown files; publish to GitHub when inside Actions.

    File names are relative to where the command was started (`ws.cwd`). `github=None`
    means: when GITHUB_ACTIONS=true. `stream` receives the workflow commands (stdout).
    """
    return _write(
        ws, load(ws, run_id), junit=junit, markdown=markdown, github=github, stream=stream
    )


def _write(
    ws: Workspace,
    data: RunReport,
    *,
    junit: str | None,
    markdown: str | None,
    github: bool | None,
    stream: TextIO | None,
) -> Written:
    from gitexec.report import github as gh
    from gitexec.report.junit import write_junit
    from gitexec.report.markdown import write_markdown

    template = user_template(ws)
    junit_path = _target(ws, junit)
    markdown_path = _target(ws, markdown)
    try:
        if junit_path is not None:
            write_junit(data, junit_path)
        if markdown_path is not None:
            write_markdown(data, markdown_path, template=template)
    except OSError as exc:
        raise UserError(f"cannot write the report: {exc}") from None
    if gh.enabled() if github is None else github:
        gh.publish(
            data,
            junit=junit_path,
            markdown=markdown_path,
            template=template,
            repo_root=ws.root,
            stream=stream,
        )
    return Written(junit_path, markdown_path)


def load(ws: Workspace, run_id: str) -> RunReport:
    return RunReport.load(ws.state_dir, run_id)


def user_template(ws: Workspace) -> Path | None:
    """`report.template` from the working tree's config, as a path (None: the built-in)."""
    config_path = ws.root / CONFIG_FILE
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError:
        return None
    parsed = parse_config(CONFIG_FILE, text)
    for finding in parsed.findings:
        if finding.is_error and finding.message.startswith("report.template:"):
            raise UserError(str(finding))  # never fall back to the built-in silently
    name = parsed.config.report_template
    if not name:
        return None
    try:
        return repository_file(ws.root, name)
    except RepositoryPathError as exc:
        raise UserError(f"{CONFIG_FILE}: report.template: {exc}") from None


def _target(ws: Workspace, name: str | None) -> Path | None:
    if name is None or name == "":
        return None
    return (ws.cwd / name).resolve()
