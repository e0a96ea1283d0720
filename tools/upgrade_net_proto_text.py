#!/usr/bin/env python3
"""Write an old Caffe net definition in the current format (Caffe's upgrade_net_proto_text).

    python tools/upgrade_net_proto_text.py old_net.prototxt new_net.prototxt
    python tools/upgrade_net_proto_text.py old.caffemodel new.caffemodel   # binary nets too

See minicaffe.upgrade.proto_file.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicaffe.upgrade.proto_file import main_upgrade_net_proto_text as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
