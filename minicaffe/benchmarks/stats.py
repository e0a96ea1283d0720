"""Figures from timing samples: medians, ratios of ours to the best reference, and the
spread of the per-pass ratios (one pass = one child process per side, run back to back)."""
import statistics


def med_ms(ts):
    return 1e3 * statistics.median(ts)


def ratio(ours, refs):
    """``ours`` over the smallest of ``refs`` (None entries ignored); None without one."""
    best = min((r for r in refs if r is not None), default=None)
    return None if ours is None or not best else ours / best


def ratio_spread(passes):
    """(min, max) of the per-pass ratios; ``passes``: one (ours, refs) per pass. None when
    no pass has both sides."""
    rs = [r for r in (ratio(o, refs) for o, refs in passes) if r is not None]
    return (min(rs), max(rs)) if rs else None
