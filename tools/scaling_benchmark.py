#!/usr/bin/env python3
"""Data-parallel scaling benchmark (minicaffe.parallel.scaling_benchmark): K = 1, 2, 4 ranks
under mpiexec on the CIFAR-10 batch-norm example; needs mpi4py and an MPI.

Usage: python tools/scaling_benchmark.py [--ranks 1,2,4] [--batch 32] [--iters 10]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minicaffe.parallel.scaling_benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
