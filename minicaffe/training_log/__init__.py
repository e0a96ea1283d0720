"""Caffe-style training logs (minicaffe's or BVLC Caffe's): parsed into rows of numbers,
written as CSV (tools/parse_log.py) or plotted (tools/plot_training_log.py, needs matplotlib).
"""
from .csv_files import write_csv  # noqa: F401
from .parsing import parse_log  # noqa: F401
from .plotting import plot  # noqa: F401
