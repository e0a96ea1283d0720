"""The ``minicaffe`` command: Caffe's ``caffe`` tool (train / test / time / device_query).

Flags are Caffe's and may be spelled as gflags allows: ``--solver s.prototxt``,
``-solver s.prototxt``, ``-solver=s.prototxt`` or ``--solver=s.prototxt``, before or after
the verb. Output is logged to stderr in glog's format so Caffe log parsers keep working.

Exit codes: 0 success, 1 a user error (missing or malformed file, bad net...; one line
``minicaffe: error: ...``), 2 a command-line mistake, 130 interrupted.
"""
from .entry import main  # noqa: F401
