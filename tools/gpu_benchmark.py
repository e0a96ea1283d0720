#!/usr/bin/env python3
"""GPU benchmark of the CIFAR-10 batch-norm example beside PyTorch.

The logic lives in minicaffe/benchmarks/gpu.py; ``--help`` lists the rows and options.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minicaffe.benchmarks.gpu import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
