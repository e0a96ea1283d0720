#!/usr/bin/env python
"""Images -> LMDB of Datums, as Caffe's convert_imageset.

    python tools/convert_imageset.py [--gray] [--shuffle] [--resize_height H --resize_width W]
        [--encoded [--encode_type png]] ROOTFOLDER/ LISTFILE DB_NAME
    python tools/convert_imageset.py [FLAGS] FOLDER DB_NAME     # one sub-folder per class
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from minicaffe.data.imageset import main_convert_imageset  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_convert_imageset(sys.argv[1:]))
