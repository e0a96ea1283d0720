#!/usr/bin/env python3
"""Caffe training log -> LOG.train.csv and LOG.test.csv (iteration, seconds, lr, outputs).

Usage: python tools/parse_log.py LOGFILE [OUTPUT_DIR]
Works on logs of `minicaffe train` and of BVLC Caffe's `caffe train`.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minicaffe.log_parser import parse_log, write_csv  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
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


if __name__ == "__main__":
    sys.exit(main())
