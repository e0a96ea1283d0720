"""A training log as LOG.train.csv and LOG.test.csv (the parse_log tool, as Caffe's
tools/extra/parse_log.py)."""
import csv
import os
import sys

from .parsing import parse_log

USAGE = """Caffe training log -> LOG.train.csv and LOG.test.csv (iteration, seconds, lr, outputs).

Usage: python tools/parse_log.py LOGFILE [OUTPUT_DIR]
Works on logs of `minicaffe train` and of BVLC Caffe's `caffe train`."""


def write_csv(rows, path, first=("NumIters", "Seconds", "LearningRate")):
    cols = [c for c in first if any(c in r for r in rows)]
    for r in rows:
        for c in r:
            if c not in cols:
                cols.append(c)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return cols


def main_parse_log(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    log = argv[0]
    if not os.path.exists(log):
        sys.stderr.write(f"parse_log: error: {log}: no such file\n")
        return 1
    out_dir = argv[1] if len(argv) > 1 else os.path.dirname(os.path.abspath(log))
    with open(log, errors="replace") as f:
        train, test = parse_log(f)
    base = os.path.join(out_dir, os.path.basename(log))
    write_csv(train, base + ".train.csv")
    write_csv(test, base + ".test.csv")
    print(f"{len(train)} train rows -> {base}.train.csv\n{len(test)} test rows -> {base}.test.csv")
    return 0
