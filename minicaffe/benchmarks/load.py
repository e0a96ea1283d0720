"""The machine's load while a benchmark runs: CPU time other processes used, in cores, as
/proc/stat's busy time of all CPUs minus this process's own CPU time (its rusage).

The machine is shared: a figure timed while others used a sizeable part of the cores says
as much about them as about the code. README figures need a quiet machine.
"""
import os
import resource
import time

README_MAX_CORES = 0.2   # others' load above which the README table is refused


def busy_seconds(stat_line, hz):
    """CPU seconds spent busy (all but idle and iowait) in /proc/stat's aggregate ``cpu``
    line: user nice system idle iowait irq softirq steal, in clock ticks of ``hz``."""
    v = [int(x) for x in stat_line.split()[1:9]]
    return (sum(v) - v[3] - v[4]) / hz


def other_cores(before, after):
    """Cores other processes kept busy between two snapshots (wall s, busy s, own CPU s)."""
    wall = after[0] - before[0]
    if wall <= 0:
        return 0.0
    others = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, others / wall)


def snapshot():
    """(wall seconds, machine busy CPU seconds, this process's CPU seconds) now."""
    with open("/proc/stat") as f:
        busy = busy_seconds(f.readline(), os.sysconf("SC_CLK_TCK"))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), busy, ru.ru_utime + ru.ru_stime


class OtherLoad:
    """``with OtherLoad() as load:`` ... ``load.cores``: others' load during the block."""

    def __enter__(self):
        self.before = snapshot()
        self.cores = None
        return self

    def __exit__(self, *exc):
        self.cores = other_cores(self.before, snapshot())


def readme_refusal(loads, limit=README_MAX_CORES):
    """Why the README table must not be printed, or None. ``loads``: (where, cores) of each
    timed child process."""
    if not loads:
        return "no load was measured"
    where, worst = max(loads, key=lambda wc: wc[1])
    if worst > limit:
        return (f"other processes used {worst:.2f} cores (more than {limit}) during {where}; "
                "its figures are not the code's alone. Rerun on a quiet machine.")
    return None
