"""`git exec report` (and `run --junit/--markdown`): reports from a run's journal.

Works for running, paused, stopped, crashed and finished runs alike: the journal is the
truth, and the reports are only views of it.
"""

from __future__ import annotations

import os
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
    from gitexec.commands.status import journal_warnings, pick_run

    rid = pick_run(ws, run_id)
    data = load(ws, rid)
    journal_warnings(ws, rid, data.state.problems)
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
    junit_path, markdown_path = report_targets(ws, junit=junit, markdown=markdown)
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


def report_targets(
    ws: Workspace, *, junit: str | None, markdown: str | None
) -> tuple[Path | None, Path | None]:
    """Where the requested reports go (absolute), or a UserError saying why not there.

    Cheap and side-effect free: a run can check its report paths before it starts.
    """
    return _target(ws, junit), _target(ws, markdown)


def _target(ws: Workspace, name: str | None) -> Path | None:
    """The report file `name` (relative to where the command started), if it is a place a
    report may go: never inside a git directory (a report over `.git/HEAD` would destroy
    the repository), and outside the repository only into a directory that exists."""
    if name is None or name == "":
        return None
    given = Path(os.path.normpath(ws.cwd / name))
    path = given.resolve()  # through symlinks: a link into .git is inside .git
    for git_dir in {ws.repo.common_dir, ws.repo.git_dir}:
        if path.is_relative_to(git_dir.resolve()):
            raise UserError(
                f"refusing to write the report to {name}: it is inside the git directory {git_dir}"
            )
    if ".git" in given.parts or ".git" in path.parts:
        # Another worktree's or a submodule's link to its git directory, or inside it.
        raise UserError(
            f"refusing to write the report to {name}: it is inside the git directory of a "
            "worktree or submodule"
        )
    if not path.parent.is_dir() and not path.is_relative_to(ws.root.resolve()):
        raise UserError(
            f"cannot write the report to {name}: directory {path.parent} does not exist "
            "(create it first; only directories inside the repository are made)"
        )
    return path
