"""`git exec check`: validate tickets, config and the committed plan (the pre-commit hook)."""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from dataclasses import replace

from gitexec.cache import SummaryCache, stat_key
from gitexec.errors import EXIT_FAILED, EXIT_OK
from gitexec.findings import Finding, Severity
from gitexec.project import FileSource, filter_findings, load_project, template_paths
from gitexec.workspace import Workspace


def check(
    ws: Workspace,
    files: Sequence[str],
    *,
    fmt: str = "text",
    use_cache: bool = True,
    strict: bool = False,
) -> int:
    """Print every finding; exit 1 when there is an error (warnings alone pass, unless
    `strict` makes every warning an error).

    With FILES, the whole project is still validated (dependencies cross files), but only
    findings in the named files are shown.
    """
    findings, count = _findings(ws, use_cache)
    if files:
        rel = [ws.relative(f) for f in files]
        findings = filter_findings(findings, rel)
    if strict:
        findings = [replace(f, severity=Severity.ERROR) for f in findings]
    errors = sum(1 for f in findings if f.is_error)
    if fmt == "json":
        print(
            json.dumps(
                {
                    "ok": errors == 0,
                    "tickets": count,
                    "findings": [
                        {
                            "path": f.path,
                            "line": f.line,
                            "col": f.col,
                            "severity": f.severity.value,
                            "message": f.message,
                        }
                        for f in findings
                    ],
                },
                indent=2,
            )
        )
    else:
        for f in findings:
            print(f)
        warnings = len(findings) - errors
        if findings:
            print(f"{errors} error(s), {warnings} warning(s) in {count} ticket(s)")
        elif files:
            print(f"{len(files)} file{'' if len(files) == 1 else 's'} OK")
        else:
            print(f"{count} ticket{'' if count == 1 else 's'} OK")
    return EXIT_FAILED if errors else EXIT_OK


Stats = tuple[tuple[str, tuple[Hashable, ...]], ...]


def _findings(ws: Workspace, use_cache: bool) -> tuple[list[Finding], int]:
    """All findings and the ticket count; an unchanged project is answered from a summary
    keyed by every file's stat, so a warm check costs one directory scan (and a look at
    the templates the config names, which live anywhere in the repository)."""
    source = FileSource(ws.root)
    signature = source.signature() if use_cache else None
    summary: SummaryCache[tuple[list[Finding], int, Stats]] = SummaryCache(
        ws.state_dir / "cache" / "check-summary.pickle", "check"
    )
    if signature is not None:
        cached = summary.get(signature)
        if cached is not None and _template_stats(ws, [rel for rel, _ in cached[2]]) == cached[2]:
            return cached[0], cached[1]
    project = load_project(
        ws.root,
        cache_path=ws.parse_cache if use_cache else None,
        source=source,
    )
    templates = _template_stats(ws, [rel for _, rel in template_paths(project.config)])
    if signature is not None:
        summary.put(signature, (list(project.findings), len(project.tickets), templates))
    return list(project.findings), len(project.tickets)


def _template_stats(ws: Workspace, paths: list[str]) -> Stats:
    """For each path, the lstat keys of it and its directories (a link swapped in changes
    one of them); empty keys for what does not exist."""
    out = []
    for rel in paths:
        keys: list[Hashable] = []
        current = ws.root
        for part in rel.split("/"):
            current = current / part
            try:
                keys.append(stat_key(current.lstat()))
            except (OSError, ValueError):
                keys.append(None)
                break
        out.append((rel, tuple(keys)))
    return tuple(out)
