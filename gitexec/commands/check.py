"""`git exec check`: validate tickets, config and the committed plan (the pre-commit hook)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from gitexec.errors import EXIT_FAILED, EXIT_OK
from gitexec.project import filter_findings
from gitexec.workspace import Workspace


def check(ws: Workspace, files: Sequence[str], *, fmt: str = "text", use_cache: bool = True) -> int:
    """Print every finding; exit 1 when there is an error (warnings alone pass).

    With FILES, the whole project is still validated (dependencies cross files), but only
    findings in the named files are shown.
    """
    project = ws.load(use_cache=use_cache)
    findings = list(project.findings)
    if files:
        rel = [ws.relative(f) for f in files]
        findings = filter_findings(findings, rel)
    errors = sum(1 for f in findings if f.is_error)
    if fmt == "json":
        print(
            json.dumps(
                {
                    "ok": errors == 0,
                    "tickets": len(project.tickets),
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
            print(f"{errors} error(s), {warnings} warning(s) in {len(project.tickets)} ticket(s)")
    return EXIT_FAILED if errors else EXIT_OK
