#!/usr/bin/env python
"""Get CIFAR-10 and convert it to LMDBs + mean image (same as `minicaffe data cifar10`).

    python tools/get_cifar10.py                      # download, check MD5, convert to data/cifar10
    python tools/get_cifar10.py --from cifar-10-binary.tar.gz
    python tools/get_cifar10.py --sample             # the bundled sample -> data/cifar10_sample
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from minicaffe.data.cifar10 import main_cifar10  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_cifar10(sys.argv[1:]))
