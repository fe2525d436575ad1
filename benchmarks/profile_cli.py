"""Profile one gitexec command's main thread by CPU time (not wall time).

On a shared machine wall-clock profiles mostly show waiting; with `time.thread_time` as the
timer, cProfile charges each function only the CPU the main thread spent in it (the engine
loop, the scheduler, the merge queue; workers and subprocesses are not included).

    python benchmarks/profile_cli.py OUT.prof -- run --no-monitor --jobs 4   # in a repository
    python -c "import pstats; pstats.Stats('OUT.prof').sort_stats('tottime').print_stats(30)"
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, args = argv[0], argv[2:]
    sys.argv = ["gitexec", *args]
    profile = cProfile.Profile(time.thread_time)
    code: object = 0
    profile.enable()
    try:
        runpy.run_module("gitexec", run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    finally:
        profile.disable()
        profile.dump_stats(out)
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
