#!/usr/bin/env python
"""Mean image of an LMDB of Datums into a .binaryproto, as Caffe's compute_image_mean.

    python tools/compute_image_mean.py INPUT_DB [OUTPUT_FILE]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from minicaffe.data.mean import main_compute_image_mean  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_compute_image_mean(sys.argv[1:]))
