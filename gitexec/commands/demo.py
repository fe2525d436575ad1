"""`git exec demo`: the whole pipeline on an embedded example project, in a temporary repo.

Eight tickets with dependencies, written as shell agents that really change code and
tests; two append to the CHANGELOG (settled by a union merge rule) and one fails its
validation on purpose, so its dependent is blocked while independent work lands.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gitexec.errors import EXIT_OK, UserError
from gitexec.gitutil import run_git

PROJECT: dict[str, str] = {
    "README.md": "# textkit\n\nSmall text utilities, built ticket by ticket by gitexec.\n",
    "CHANGELOG.md": "# Changelog\n\n",
    "textkit/__init__.py": '"""textkit: small text utilities."""\n',
    "tests/__init__.py": "",
    "tests/test_package.py": (
        "import unittest\n\nimport textkit\n\n\n"
        "class PackageTest(unittest.TestCase):\n"
        "    def test_docstring(self):\n"
        "        self.assertIn('text', textkit.__doc__)\n"
    ),
    ".gitignore": "__pycache__/\n",
}

CONFIG = """\
version: 1
jobs: 3
plan:
  default_estimate: 2s
merge:
  rules:
    - {paths: [CHANGELOG.md], strategy: union}
"""

TEST = "python3 -m unittest discover -s tests -t . -q"


def _ticket(
    tid: str,
    title: str,
    run: str,
    *,
    depends_on: tuple[str, ...] = (),
    paths: tuple[str, ...] = (),
    estimate: str = "2s",
    validate: str | None = TEST,
    retries: int | None = None,
) -> str:
    lines = [
        f"id: {tid}",
        f"title: {title}",
        f"depends_on: [{', '.join(depends_on)}]",
        f"paths: [{', '.join(paths)}]",
        f"estimate: {estimate}",
    ]
    if retries is not None:
        lines.append(f"retries: {retries}")
    lines.append("run: |")
    lines.extend(f"  {line}" if line else "" for line in run.strip("\n").splitlines())
    if validate:
        lines.append(f'validate: ["{validate}"]')
    lines.append("status: pending")
    return "\n".join(lines) + "\n"


def _write(path: str, body: str) -> str:
    """A shell snippet writing `body` to `path` (quoted heredoc: no expansion)."""
    return f"mkdir -p $(dirname {path})\ncat > {path} <<'GITEXEC_EOF'\n{body}GITEXEC_EOF\n"


def _progress(pct: int, sleep: float) -> str:
    return f'echo {pct} > "$GITEXEC_PROGRESS_FILE"; sleep {sleep}\n'


TICKETS: dict[str, str] = {
    "CORE-1": _ticket(
        "CORE-1",
        "Add slugify",
        _progress(30, 0.6)
        + _write(
            "textkit/slug.py",
            "import re\n\n\ndef slugify(text):\n"
            '    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")\n',
        )
        + _write(
            "tests/test_slug.py",
            "import unittest\n\nfrom textkit.slug import slugify\n\n\n"
            "class SlugTest(unittest.TestCase):\n"
            "    def test_slug(self):\n"
            '        self.assertEqual(slugify("Hello, World!"), "hello-world")\n',
        )
        + "echo '- slugify()' >> CHANGELOG.md\n"
        + _progress(80, 0.6),
        paths=("textkit/slug.py", "tests/test_slug.py", "CHANGELOG.md"),
    ),
    "CORE-2": _ticket(
        "CORE-2",
        "Add word counter",
        _progress(40, 0.8)
        + _write(
            "textkit/count.py",
            "def count_words(text):\n    return len(text.split())\n",
        )
        + _write(
            "tests/test_count.py",
            "import unittest\n\nfrom textkit.count import count_words\n\n\n"
            "class CountTest(unittest.TestCase):\n"
            "    def test_count(self):\n"
            '        self.assertEqual(count_words("a b  c"), 3)\n',
        )
        + "echo '- count_words()' >> CHANGELOG.md\n"
        + _progress(90, 0.4),
        paths=("textkit/count.py", "tests/test_count.py", "CHANGELOG.md"),
    ),
    "CORE-3": _ticket(
        "CORE-3",
        "Add title case",
        _progress(50, 0.7)
        + _write(
            "textkit/titlecase.py",
            "SMALL = {'a', 'an', 'of', 'the'}\n\n\ndef titlecase(text):\n"
            "    words = text.lower().split()\n"
            "    return ' '.join(w if i and w in SMALL else w.capitalize()"
            " for i, w in enumerate(words))\n",
        )
        + _write(
            "tests/test_titlecase.py",
            "import unittest\n\nfrom textkit.titlecase import titlecase\n\n\n"
            "class TitleTest(unittest.TestCase):\n"
            "    def test_title(self):\n"
            "        self.assertEqual(\n"
            '            titlecase("the lord of the rings"), "The Lord of the Rings"\n'
            "        )\n",
        ),
        paths=("textkit/titlecase.py", "tests/test_titlecase.py"),
    ),
    "CLI-1": _ticket(
        "CLI-1",
        "Command line interface",
        _progress(50, 0.8)
        + _write(
            "textkit/__main__.py",
            "import sys\n\n"
            "from textkit.count import count_words\n"
            "from textkit.slug import slugify\n\n"
            "text = ' '.join(sys.argv[1:])\nprint(slugify(text), count_words(text))\n",
        )
        + _write(
            "tests/test_cli.py",
            "import subprocess\nimport sys\nimport unittest\n\n\n"
            "class CliTest(unittest.TestCase):\n"
            "    def test_cli(self):\n"
            "        out = subprocess.run([sys.executable, '-m', 'textkit', 'Hi', 'there'],\n"
            "                             capture_output=True, text=True, check=True).stdout\n"
            "        self.assertEqual(out.split(), ['hi-there', '2'])\n",
        ),
        depends_on=("CORE-1", "CORE-2"),
        paths=("textkit/__main__.py", "tests/test_cli.py"),
    ),
    "DOC-1": _ticket(
        "DOC-1",
        "Document the API",
        _progress(60, 0.5)
        + "mkdir -p docs\n"
        + "{ echo '# API'; grep -h '^def ' textkit/*.py | sed 's/^def /- /; s/:$//'; }"
        + " > docs/API.md\n",
        depends_on=("CORE-1", "CORE-2", "CORE-3"),
        paths=("docs/**",),
        validate="grep -q slugify docs/API.md",
    ),
    "PERF-1": _ticket(
        "PERF-1",
        "Make counting faster (fails on purpose)",
        _progress(50, 0.5)
        + _write(
            "textkit/count.py",
            "def count_words(text):\n    return text.count(' ') + 1  # too clever by half\n",
        ),
        depends_on=("CORE-2",),
        paths=("textkit/count.py",),
        retries=1,
    ),
    "REL-1": _ticket(
        "REL-1",
        "Release 0.2",
        "echo '## 0.2' >> CHANGELOG.md\n",
        depends_on=("CLI-1", "DOC-1", "PERF-1"),
        paths=("CHANGELOG.md",),
        validate=None,
    ),
    "LINT-1": _ticket(
        "LINT-1",
        "Add a style check",
        _progress(50, 0.5)
        + _write(
            "tests/test_style.py",
            "import pathlib\nimport unittest\n\n\n"
            "class StyleTest(unittest.TestCase):\n"
            "    def test_no_tabs(self):\n"
            "        for path in pathlib.Path('textkit').glob('*.py'):\n"
            "            self.assertNotIn('\\t', path.read_text(), path)\n",
        ),
        paths=("tests/test_style.py",),
    ),
}


def build_demo_repo(path: Path) -> Path:
    """Create the example repository at `path` (must not exist or be empty)."""
    if path.exists() and any(path.iterdir()):
        raise UserError(f"{path} exists and is not empty")
    path.mkdir(parents=True, exist_ok=True)
    run_git(["init", "-q", "-b", "main"], path)
    for rel, body in {**PROJECT, ".gitexec/config.yaml": CONFIG}.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(body, encoding="utf-8")
    for tid, body in TICKETS.items():
        (path / ".gitexec/tickets" / f"{tid}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (path / ".gitexec/tickets" / f"{tid}.yaml").write_text(body, encoding="utf-8")
    identity = {
        "GIT_AUTHOR_NAME": "gitexec demo",
        "GIT_AUTHOR_EMAIL": "demo@gitexec.invalid",
        "GIT_COMMITTER_NAME": "gitexec demo",
        "GIT_COMMITTER_EMAIL": "demo@gitexec.invalid",
    }
    run_git(["add", "-A"], path)
    run_git(["commit", "-q", "-m", "textkit: project and tickets"], path, env=identity)
    return path


def demo(directory: str | None, *, jobs: int | None, monitor: bool | None) -> int:
    from gitexec.commands.run import RunRequest, run
    from gitexec.workspace import Workspace

    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="gitexec-demo-"))
    build_demo_repo(root.resolve())
    print(f"demo repository: {root}  ({len(TICKETS)} tickets, PERF-1 fails on purpose)\n")
    ws = Workspace.find(root)
    code = run(ws, RunRequest(jobs=jobs, monitor=monitor, run_id="demo"))
    print(
        f"\nexplore: cd {root} && git log --oneline --graph gitexec/demo && git exec status\n"
        "the failure of PERF-1 (and REL-1 blocked behind it) is part of the demo"
    )
    # The planned failure is the demo working as intended; anything else is not.
    return EXIT_OK if code in (0, 1) else code
