"""Supervised processes: real commands, real daemons, real pipes."""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from gitexec import agents, process
from gitexec.process import (
    Limits,
    ProcessResult,
    Sample,
    cgroups,
    kill_run,
    output,
    run_process,
    run_processes,
    spawn,
)
from tests.project import make_project, run_ok, status, ticket_yaml, tree_without_engine_files

PY = sys.executable


@pytest.fixture(params=["cgroup", "no-cgroup"])
def isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each tree-killing test with a cgroup (where this machine allows one) and without
    (as on machines where cgroup v2 is not writable): the token and the group must suffice."""
    if request.param == "no-cgroup":
        monkeypatch.setattr(
            cgroups._Cgroup, "create", classmethod(lambda cls, token: (None, "off for the test"))
        )
    elif not cgroup_available():
        pytest.skip("cgroup v2 not writable here")
    return str(request.param)


def cgroup_available() -> bool:
    cgroup, _ = cgroups._Cgroup.create(uuid.uuid4().hex)
    if cgroup is None:
        return False
    cgroup.remove()
    return True


@pytest.fixture
def run_id() -> Iterator[str]:
    """A run id of this test's own, so leftovers are found by GITEXEC_RUN (and cleaned up)."""
    rid = f"t-{uuid.uuid4().hex[:12]}"
    yield rid
    kill_run(rid, grace_s=0)


def run(
    tmp_path: Path,
    argv: list[str],
    run_id: str = "",
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 60,
    **options: Any,
) -> ProcessResult:
    """run_process in `tmp_path`, logging to tmp_path/log, tagged with `run_id`."""
    full_env = {"GITEXEC_RUN": run_id} if run_id else {}
    full_env.update(env or {})
    return run_process(
        argv, cwd=tmp_path, env=full_env, log=tmp_path / "log", timeout_s=timeout_s, **options
    )


def log_bytes(tmp_path: Path) -> bytes:
    return (tmp_path / "log").read_bytes()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# --- nothing outlives the command ---------------------------------------------------------


def test_a_daemon_the_command_leaves_is_killed(tmp_path: Path, run_id: str, isolation: str) -> None:
    result = run(tmp_path, sh("setsid sh -c 'sleep 1; echo leak > f' & echo started"), run_id)
    assert result.ok
    assert result.leftovers >= 1
    # Nothing of the command lives on, so `f` can never appear.
    assert run_processes(run_id) == []
    assert not (tmp_path / "f").exists()
    assert b"gitexec: killed" in log_bytes(tmp_path)


DOUBLE_FORK = """
import os, sys, time
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)
"""


def test_a_double_fork_out_of_the_session_is_killed(
    tmp_path: Path, run_id: str, isolation: str
) -> None:
    pidfile = tmp_path / "pid"
    script = f"{PY} -c '{DOUBLE_FORK}' {pidfile}; while [ ! -e {pidfile} ]; do sleep 0.01; done"
    result = run(tmp_path, sh(script), run_id)
    assert result.ok, log_bytes(tmp_path)
    daemon = int(pidfile.read_text())
    assert not alive(daemon)
    assert run_processes(run_id) == []


def test_an_escape_that_also_drops_its_environment_is_killed_by_the_cgroup(
    tmp_path: Path, run_id: str
) -> None:
    if not cgroup_available():
        pytest.skip("cgroup v2 not writable here: only the token and the process group apply")
    pidfile = tmp_path / "pid"
    escape = f"env -i setsid sh -c 'echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 120' &"
    result = run(tmp_path, sh(f"{escape} while [ ! -e {pidfile} ]; do sleep 0.01; done"))
    assert result.ok
    assert result.leftovers == 1
    assert not alive(int(pidfile.read_text()))


def test_arguments_and_environment_reach_the_command_verbatim(
    tmp_path: Path, isolation: str
) -> None:
    args = ["zero", "one two", 'it\'s "quoted"', "new\nline", "$HOME", ""]
    seen: list[bytes] = []
    script = 'printf "%s|" "$0" "$@"; printf "%s" "$EXTRA"'
    result = run(tmp_path, ["sh", "-c", script, *args], env={"EXTRA": "x y"}, on_output=seen.append)
    assert result.ok
    assert b"".join(seen).decode() == "|".join(args) + "|x y"


def test_cancel_kills_the_whole_tree(tmp_path: Path, run_id: str, isolation: str) -> None:
    cancel = threading.Event()

    def on_output(data: bytes) -> None:
        if b"ready" in data:
            cancel.set()

    result = run(
        tmp_path,
        sh("setsid sleep 120 & sleep 120 & echo ready; wait"),
        run_id,
        cancel=cancel,
        on_output=on_output,
    )
    assert result.cancelled and not result.ok
    assert run_processes(run_id) == []
    assert b"gitexec: stopped; killed the command and everything it started" in log_bytes(tmp_path)


def test_timeout_kills_the_whole_tree_even_when_it_ignores_sigterm(
    tmp_path: Path, run_id: str, isolation: str
) -> None:
    result = run(
        tmp_path,
        sh("trap '' TERM; setsid sleep 120 & sleep 120"),
        run_id,
        timeout_s=0.3,
        grace_s=0.2,
    )
    assert result.timed_out and not result.ok
    assert run_processes(run_id) == []
    assert b"timed out after 0.3s; killed the command and everything it started (SIGKILL" in (
        log_bytes(tmp_path)
    )


def test_concurrent_commands_keep_their_own_exit_codes(tmp_path: Path, run_id: str) -> None:
    """No supervisor reaps another's child, nor a child some other code waits for."""
    results: dict[int, ProcessResult] = {}
    others: dict[int, int] = {}

    def supervised(i: int) -> None:
        d = tmp_path / str(i)
        d.mkdir()
        results[i] = run(d, sh(f"setsid sleep 120 & i=0; exit {i + 3}"), run_id)

    def plain(i: int) -> None:
        others[i] = subprocess.run(sh(f"exit {i + 40}"), check=False).returncode

    threads = [threading.Thread(target=supervised, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=plain, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: r.exit_code for i, r in results.items()} == {i: i + 3 for i in range(8)}
    assert all(r.start_error is None and not r.warnings for r in results.values())
    assert others == {i: i + 40 for i in range(8)}
    assert run_processes(run_id) == []


def test_kill_run_finds_orphans_by_run_id(tmp_path: Path, run_id: str) -> None:
    """What `resume` does with the agents of an engine that was killed (one of them stopped,
    as a command is for a moment while it joins its cgroup)."""
    env = {**os.environ, "GITEXEC_RUN": run_id}
    orphans = [
        subprocess.Popen(["sleep", "120"], env=env, start_new_session=True) for _ in range(2)
    ]
    os.kill(orphans[1].pid, signal.SIGSTOP)
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        pids = sorted(p.pid for p in orphans)
        assert run_processes(run_id) == pids
        assert kill_run(run_id, grace_s=5) == pids
        assert [p.wait(timeout=10) for p in orphans] == [-signal.SIGTERM] * 2
        assert bystander.poll() is None
    finally:
        for p in (*orphans, bystander):
            p.kill()
            p.wait()


def test_a_daemon_an_agent_leaves_does_not_write_into_the_next_ticket(tmp_path: Path) -> None:
    """An agent's setsid daemon waits for the next ticket, then writes into its worktree.

    Without killing everything the agent started, `leak.txt` is committed as B's work.
    """
    side = tmp_path / "side"
    side.mkdir()
    daemon = (
        f"until [ -s {side}/b-dir ]; do sleep 0.05; done; "
        f'echo leak > "$(cat {side}/b-dir)/leak.txt"; touch {side}/leaked'
    )
    a = f"setsid sh -c '{daemon}' >/dev/null 2>&1 & echo $! > {side}/daemon.pid; echo a > a.txt"
    b = (
        f"pwd > {side}/b-dir.tmp && mv {side}/b-dir.tmp {side}/b-dir; echo b > b.txt; "
        f"state=$(ps -o stat= -p $(cat {side}/daemon.pid)); "
        f'if [ -n "$state" ] && [ "${{state#Z}}" = "$state" ]; then '  # alive, not a zombie
        f"i=0; while [ ! -e {side}/leaked ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; fi"
    )
    repo = make_project(
        tmp_path / "repo",
        {"A": ticket_yaml("A", run=a), "B": ticket_yaml("B", run=b, depends_on=["A"])},
    )
    code, out, err = run_ok(repo, "--jobs", "1", "--run-id", "d1")
    assert code == 0, out + err
    assert sorted(tree_without_engine_files(repo, "gitexec/d1")) == ["README.md", "a.txt", "b.txt"]
    assert {t["status"] for t in status(repo, "d1")["tickets"].values()} == {"completed"}
    assert not alive(int((side / "daemon.pid").read_text()))
    assert run_processes("d1") == []


# --- output: redacted, capped, streamed ---------------------------------------------------


def redact(data: bytes) -> bytes:
    return data.replace(b"SECRET-VALUE-1234", b"[redacted]")


SPLIT_WRITER = """
import os, sys, time
go = sys.argv[1]
sys.stdout.buffer.write(b"before SECRET-VA"); sys.stdout.flush()
while not os.path.exists(go):
    time.sleep(0.01)
sys.stdout.buffer.write(b"LUE-1234 after\\n"); sys.stdout.flush()
"""


def test_a_secret_split_across_reads_is_redacted_in_the_log(tmp_path: Path) -> None:
    go = tmp_path / "go"
    seen: list[bytes] = []

    def on_output(data: bytes) -> None:
        seen.append(data)
        go.touch()  # the first half was read: only now does the child write the second

    result = run(tmp_path, [PY, "-c", SPLIT_WRITER, str(go)], redact=redact, on_output=on_output)
    assert result.ok
    assert len(seen) >= 2 and seen[0] == b"before SECRET-VA"
    assert b"".join(seen) == b"before SECRET-VALUE-1234 after\n"  # raw for the callback
    log = log_bytes(tmp_path)
    assert b"before [redacted] after\n" in log
    assert b"SECRET" not in log


def test_a_secret_on_a_very_long_line_is_redacted(tmp_path: Path) -> None:
    secret = b"SECRET-VALUE-1234"
    # No newline for 3 MiB; one secret straddles the 1 MiB point where the line is first cut.
    edge = output._MAX_LINE - 5
    line = bytearray(b"x" * (3 * 1024 * 1024))
    line[edge : edge + len(secret)] = secret
    line[2_000_000 : 2_000_000 + len(secret)] = secret
    (tmp_path / "data").write_bytes(bytes(line) + b"\nend\n")
    result = run(tmp_path, ["cat", "data"], redact=redact)
    assert result.ok
    log = log_bytes(tmp_path)
    assert b"SECRET" not in log
    assert log.count(b"[redacted]") == 2
    assert log.endswith(b"\nend\n")
    assert len(log) == len(line) + 5 - 2 * (len(secret) - len(b"[redacted]"))


def test_a_failing_redactor_withholds_output(tmp_path: Path) -> None:
    def broken(data: bytes) -> bytes:
        raise RuntimeError("boom")

    result = run(tmp_path, sh("echo SECRET-VALUE-1234"), redact=broken)
    assert result.ok
    assert result.warnings == (
        "redaction failed (RuntimeError('boom')): the rest of the output was withheld",
    )
    log = log_bytes(tmp_path)
    assert b"SECRET" not in log
    assert b"output withheld from here on: redaction failed" in log


def test_the_log_cap_keeps_head_and_tail_and_says_what_was_dropped(tmp_path: Path) -> None:
    lines = 400_000  # 12 bytes each: 4.8 MB
    script = f"for i in range({lines}): print(f'line {{i:06d}}')"
    cap = 1024 * 1024
    result = run(tmp_path, [PY, "-c", script], header="=== header\n", log_cap=cap)
    assert result.ok
    log = log_bytes(tmp_path)
    marker = f"\n[gitexec: {result.dropped_bytes} bytes of output dropped here; ".encode()
    head, _, rest = log.partition(marker)
    note, _, tail = rest.partition(b"]\n")
    assert head.startswith(b"=== header\nline 000000\nline 000001\n")
    assert len(head) == len(b"=== header\n") + cap // 2
    assert note == b"the log keeps the first 512 KiB and the last 512 KiB of each command's output"
    last = f"line {lines - 1:06d}\n".encode()
    footer = (
        f"gitexec: {result.dropped_bytes} bytes of output were dropped from this log (log cap)\n"
    )
    assert tail.endswith(last + footer.encode())
    assert tail.startswith(b"line ")  # whole lines
    tail_output = tail[: -len(footer)]
    assert cap // 2 - 12 < len(tail_output) <= cap // 2
    assert result.dropped_bytes == lines * 12 - (cap // 2) - len(tail_output)


def test_a_first_chunk_past_the_cap_fills_the_head(tmp_path: Path) -> None:
    """One read larger than the cap: the head is its start, never NUL bytes."""
    cap = 4096
    script = "import sys; sys.stdout.write(''.join(f'{i}\\n' for i in range(1, 30001)))"
    result = run(tmp_path, [PY, "-u", "-c", script], header="=== h\n", log_cap=cap)
    assert result.ok
    log = log_bytes(tmp_path)
    assert b"\0" not in log
    head = log.split(b"\n[gitexec: ")[0]
    assert head.startswith(b"=== h\n1\n2\n3\n")
    assert len(head) == len(b"=== h\n") + cap // 2
    assert log.endswith(
        b"29999\n30000\n"
        + f"gitexec: {result.dropped_bytes} bytes of output were dropped from this log (log cap)\n".encode()
    )


def test_a_huge_burst_and_an_early_closed_stdout_do_not_hang(tmp_path: Path) -> None:
    burst = run(tmp_path, [PY, "-c", "import sys; sys.stdout.write('y' * (20 << 20))"])
    assert burst.ok
    assert burst.dropped_bytes == 0
    early = run(tmp_path, sh("echo bye; exec >&- 2>&-; sleep 0.2; exit 3"))
    assert early.exit_code == 3


def test_a_failing_output_callback_is_a_warning(tmp_path: Path) -> None:
    def on_output(data: bytes) -> None:
        raise ValueError("parser bug")

    result = run(tmp_path, sh("echo one; echo two"), on_output=on_output)
    assert result.ok
    assert result.warnings == ("output callback failed: ValueError('parser bug')",)
    log = log_bytes(tmp_path)
    assert b"one\ntwo\n" in log
    assert b"warning: output callback failed" in log


# --- stdin ----------------------------------------------------------------------------------


def test_stdin_bytes_reach_the_command(tmp_path: Path, isolation: str) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: more than any pipe buffer, both ways
    seen: list[bytes] = []
    result = run(tmp_path, ["cat"], stdin=data, on_output=seen.append)
    assert result.ok
    assert b"".join(seen) == data


@pytest.mark.parametrize("command", ["true", "head -c 10 >/dev/null; sleep 0.1", "exec 0<&-"])
def test_a_command_that_ignores_or_closes_stdin(
    tmp_path: Path, command: str, isolation: str
) -> None:
    result = run(tmp_path, sh(command), stdin=b"z" * (8 << 20))
    assert result.ok
    assert result.warnings == ()


def test_without_stdin_the_command_reads_dev_null(tmp_path: Path, isolation: str) -> None:
    seen: list[bytes] = []
    result = run(tmp_path, sh("wc -c; readlink /proc/self/fd/0 || echo"), on_output=seen.append)
    assert result.ok
    count, device = b"".join(seen).split()[:2]
    assert count == b"0"
    if sys.platform.startswith("linux"):
        assert device == b"/dev/null"


@pytest.mark.parametrize("mode", ["stdin", "none"])
@pytest.mark.parametrize("sent", [b"", b"'touch' 'ran'\n", b"'touch' 'ran"])
def test_a_command_never_runs_if_its_supervisor_dies_before_letting_it_go(
    tmp_path: Path, mode: str, sent: bytes
) -> None:
    """The engine killed before the waiting shell got its whole command line (nothing, or
    the words without the end line, or cut short): the shell sees its stdin closed and
    exits; nothing ran, nothing stays behind."""
    waiting = subprocess.Popen(
        ["/bin/sh", "-c", spawn._SHIM, "gitexec", str(tmp_path), "end-of-launch", mode],
        stdin=subprocess.PIPE,
    )
    assert waiting.stdin is not None
    waiting.stdin.write(sent)
    waiting.stdin.close()
    assert waiting.wait(timeout=30) == 125
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["printf", "%s|", "two words", "it's", "$HOME", "`id`", "a\nb", "-", "", "*", "\\"],
        ["printf", "%s|", "; touch ran", "$(touch ran)", "' ; touch ran ; '", '"', "end-of-launch"],
    ],
)
def test_the_waiting_shell_runs_exactly_the_words_it_was_given(
    tmp_path: Path, argv: list[str]
) -> None:
    if not cgroup_available():
        pytest.skip("cgroup v2 not writable here: commands start without the shell")
    result = run(tmp_path, argv)
    assert result.ok, log_bytes(tmp_path)
    printed = log_bytes(tmp_path).decode()
    assert printed.endswith("|".join(argv[2:]) + "|")
    assert not (tmp_path / "ran").exists()


def test_a_launch_abandoned_before_its_command_leaves_nothing(tmp_path: Path) -> None:
    before = set(psutil.Process().children(recursive=True))
    launch = process.Launch(tmp_path, {}, None, with_stdin=False)
    launch.abandon()
    launch.abandon()  # twice is harmless
    assert launch.cgroup is None
    assert set(psutil.Process().children(recursive=True)) <= before
    home, _ = cgroups._cgroup_home()
    if home is not None:
        assert list(home.glob(f"gitexec-{os.getpid()}-{launch.token[:12]}")) == []


def test_a_launch_outlives_its_worktree_being_rebuilt(tmp_path: Path) -> None:
    # A slot's reset may remove and recreate the worktree while the agent's shell waits: the
    # shell enters the directory only once the command comes.
    place = tmp_path / "slot"
    place.mkdir()
    launch = process.Launch(place, {}, None, with_stdin=False)
    (place).rmdir()
    place.mkdir()
    result = run_process(
        ["sh", "-c", "pwd > where"],
        cwd=place,
        env={},
        log=tmp_path / "log",
        timeout_s=60,
        launch=launch,
    )
    assert result.ok
    assert (place / "where").read_text().strip() == str(place)


# --- start errors ---------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's per-argument limit")
def test_an_argument_over_the_limit_is_a_clear_start_error(tmp_path: Path) -> None:
    result = run(tmp_path, ["echo", "p" * (200 * 1024)])
    assert result.exit_code == 127 and not result.ok
    assert result.start_error == (
        "argument 1 is too long (204800 bytes; E2BIG: the limit is 131072 bytes per argument): "
        "pass a long prompt with `stdin: prompt` or `{{ prompt_file }}`"
    )
    assert f"gitexec: cannot start: {result.start_error}\n".encode() in log_bytes(tmp_path)


def test_a_missing_command_is_a_clear_start_error(tmp_path: Path) -> None:
    result = run(tmp_path, ["no-such-command-xyz", "arg"])
    assert (result.exit_code, result.start_error) == (127, "command not found: no-such-command-xyz")
    assert b"gitexec: cannot start: command not found: no-such-command-xyz\n" in log_bytes(tmp_path)


def test_a_command_without_permission_is_a_clear_start_error(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    result = run(tmp_path, [str(script)])
    assert result.start_error == f"permission denied: {script}"


def test_a_script_whose_interpreter_is_missing(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/no/such/interpreter\necho hi\n")
    script.chmod(0o755)
    result = run(tmp_path, [str(script)])
    assert (
        result.start_error == f"cannot run '{script}': its interpreter (the #! line) was not found"
    )


def test_agents_run_process_is_the_same_supervisor(tmp_path: Path) -> None:
    assert agents.run_process is run_process
    assert agents.ProcessResult is ProcessResult
    result = agents.run_process(
        ["sh", "-c", "exit 5"], cwd=tmp_path, env={}, log=tmp_path / "log", timeout_s=None
    )
    assert (result.exit_code, result.timed_out, result.cancelled, result.ok) == (
        5,
        False,
        False,
        False,
    )
    assert result.duration_s >= 0


# --- resources ------------------------------------------------------------------------------


def test_cpu_time_and_samples_of_a_busy_command(tmp_path: Path) -> None:
    """The command burns CPU in a child until the supervisor has sampled it."""
    stop = tmp_path / "stop"
    burner = f"import os\nwhile not os.path.exists({str(stop)!r}):\n    sum(range(10000))\n"
    samples: list[Sample] = []

    def on_sample(sample: Sample) -> None:
        samples.append(sample)
        if sample.cpu_s > 0.05:
            stop.touch()

    result = run(
        tmp_path,
        sh(f"{PY} -c {shlex.quote(burner)}; true"),
        on_sample=on_sample,
        sample_every_s=0.02,
    )
    assert result.ok
    assert samples and samples[-1].cpu_s > 0.05
    assert samples[-1].processes >= 2  # the shell and the burner
    assert samples[-1].rss_mb > 0 and samples[-1].peak_rss_mb >= samples[-1].rss_mb
    assert result.cpu_s >= samples[-1].cpu_s


def test_peak_memory_of_a_short_lived_child(tmp_path: Path) -> None:
    """Even a child gone before any sample counts: the wait status carries its peak."""
    hungry = "b = bytearray(150 << 20); b[::4096] = b'x' * len(b[::4096])"
    result = run(tmp_path, sh(f'{PY} -c "{hungry}"; true'), sample_every_s=60)
    assert result.ok
    assert result.peak_rss_mb >= 150
    assert result.cpu_s > 0


def test_limits_are_enforced_or_a_warning_says_so(tmp_path: Path) -> None:
    result = run(tmp_path, sh("true"), limits=Limits(memory=1 << 30, cpu=1.5))
    assert result.ok
    for warning in result.warnings:
        assert "limit not enforced: " in warning or warning.startswith("limits not enforced: ")
        assert f"gitexec: warning: {warning}\n".encode() in log_bytes(tmp_path)


def test_limits_without_a_cgroup_are_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        cgroups, "_cgroup_home", lambda: (None, "cgroup v2 not writable here (read-only)")
    )
    result = run(tmp_path, sh("true"), limits=Limits(memory=1 << 30))
    assert result.ok
    assert result.warnings == ("limits not enforced: cgroup v2 not writable here (read-only)",)


def test_a_memory_limit_stops_a_runaway_command(tmp_path: Path) -> None:
    hungry = "b = bytearray(512 << 20); b[::4096] = b'x' * len(b[::4096])"
    result = run(tmp_path, [PY, "-c", hungry], limits=Limits(memory=64 << 20))
    if result.warnings:
        pytest.skip(f"no memory limit here: {result.warnings[0]}")
    assert not result.ok
    assert result.oom_killed
    assert b"gitexec: killed: memory limit reached" in log_bytes(tmp_path)


def test_machine_load() -> None:
    load = process.machine_load()
    assert load.cores >= 1
    assert 0 < load.memory_available_mb <= load.memory_total_mb
    assert load.load_1m >= 0
    busy = process.MachineLoad(9.0, 5.0, 3.0, 2, 1000.0, 50.0)
    assert busy.overcommitted() == "load 9.0 on 2 cores; 50 MiB of 1000 MiB memory available"


def test_cgroups_left_by_a_killed_engine_are_removed() -> None:
    home, why = cgroups._cgroup_home()
    if home is None or not cgroup_available():
        pytest.skip(why or "cgroup v2 not writable here")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = home / f"gitexec-{dead.pid}-{uuid.uuid4().hex[:12]}"
    ours = home / f"gitexec-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    stale.mkdir()
    ours.mkdir()
    try:
        cgroups._cgroup_home.cache_clear()
        assert cgroups._cgroup_home() == (home, "")
        assert not stale.exists()
        assert ours.exists()
    finally:
        for d in (stale, ours):
            if d.exists():
                d.rmdir()


def test_an_attempt_that_fails_before_its_agent_starts_leaves_no_waiting_shell(
    tmp_path: Path,
) -> None:
    # The agent's shell starts while its slot is set up; a setup that fails ends the attempt
    # before any command: the shell must go, and its cgroup with it.
    config = "worktree:\n  setup: ['echo broken >&2; exit 3']\n"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="touch ran")}, config=config)
    before = set(psutil.Process().children(recursive=True))
    code, out, err = run_ok(repo, "--run-id", "s", "--jobs", "1")
    assert code != 0, out + err
    assert status(repo, "s")["tickets"]["A"]["status"] == "failed"
    left = [p for p in psutil.Process().children(recursive=True) if p not in before]
    assert [p.cmdline() for p in left if p.is_running()] == []
    home, _ = cgroups._cgroup_home()
    if home is not None:
        assert list(home.glob(f"gitexec-{os.getpid()}-*")) == []
