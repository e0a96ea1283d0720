#!/usr/bin/env python3
"""Benchmark of minicaffe's BatchNorm, Scale and Bias layers beside PyTorch.

The logic lives in minicaffe/benchmarks/batchnorm.py; ``--help`` lists the rows and options.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minicaffe.benchmarks.batchnorm import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
