#!/usr/bin/env python3
"""Draw a net as a picture, as Caffe's python/draw_net.py (same arguments).

    python tools/draw_net.py train_val.prototxt net.png --rankdir TB --phase TRAIN

Needs graphviz's ``dot``; without it the graph is written as ``<output>.dot`` text with the
command that renders it. Same as ``minicaffe draw``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicaffe.draw import main_draw  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_draw(sys.argv[1:], prog="draw_net.py"))
