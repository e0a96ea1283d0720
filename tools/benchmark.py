#!/usr/bin/env python3
"""CPU benchmark of the CIFAR-10 examples beside PyTorch.

The logic lives in minicaffe/benchmarks/cpu.py; ``--help`` lists the rows and options.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minicaffe.benchmarks.cpu import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
