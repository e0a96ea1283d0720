"""Figures from timing samples: medians, and the ratios of ours to the best reference taken
pass by pass (one pass = one child process per side, run back to back, so both sides of a
ratio met the same load): their median and spread."""
import statistics


def med_ms(ts):
    return 1e3 * statistics.median(ts)


def ratio(ours, refs):
    """``ours`` over the smallest of ``refs`` (None entries ignored); None without one."""
    best = min((r for r in refs if r is not None), default=None)
    return None if ours is None or not best else ours / best


def ratio_summary(passes):
    """(median, min, max) of the per-pass ratios; ``passes``: one (ours, refs) per pass.
    None when no pass has both sides."""
    rs = [r for r in (ratio(o, refs) for o, refs in passes) if r is not None]
    return (statistics.median(rs), min(rs), max(rs)) if rs else None
