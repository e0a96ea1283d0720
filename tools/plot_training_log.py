#!/usr/bin/env python3
"""Plot training loss and test outputs of Caffe logs to a PNG (see
minicaffe.training_log.plotting).

Usage: python tools/plot_training_log.py LOGFILE OUT.png [LOGFILE2 ...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minicaffe.training_log.plotting import main_plot_training_log  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_plot_training_log())
