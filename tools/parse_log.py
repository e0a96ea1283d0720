#!/usr/bin/env python3
"""Caffe training log -> LOG.train.csv and LOG.test.csv (see minicaffe.training_log.csv_files).

Usage: python tools/parse_log.py LOGFILE [OUTPUT_DIR]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minicaffe.training_log.csv_files import main_parse_log  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_parse_log())
