"""Run one command and write its own resource usage (``os.wait4``) as JSON: the benchmarks' stopwatch.

    python benchmarks/measure.py USAGE.json -- COMMAND [ARG]...

Why a separate small process: on Linux a child's ``ru_maxrss`` also counts the memory of the process
it was forked from (the kernel keeps the old address space's high-water mark across ``exec``, and
``subprocess`` forks with vfork). Started from the benchmark script, which holds whole workloads in
memory, ionqbo would be charged for them; started from this tiny process, it is charged a few MB at
most. Standard input, output and error pass through; the exit code is the command's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    """Run the command after ``--``; write {exit_code, wall, user, system, max_rss_kb, pid} to the usage file."""
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    usage_path, command = argv[0], argv[2:]
    start = time.monotonic()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(usage_path, "w", encoding="utf-8") as out:
        json.dump({"exit_code": proc.returncode, "wall": wall, "user": usage.ru_utime, "system": usage.ru_stime,
                   "max_rss_kb": usage.ru_maxrss, "pid": proc.pid}, out)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
