"""The command-line frame of the Caffe data tools (convert_imageset, compute_image_mean)."""
import argparse
import sys

from ..errors import MiniCaffeError
from .db import LEVELDB_HINT


def tool_parser(prog, description):
    """An ArgumentParser for tool ``prog`` with Caffe's ``--backend`` flag."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--backend", default="lmdb", choices=["lmdb", "leveldb"])
    return ap


def run_tool(args, work):
    """Run ``work()`` for the parsed ``args``; the exit status: 1, the message on stderr, when
    it raises MiniCaffeError or ``--backend leveldb`` asks for what only LMDB serves here."""
    try:
        if args.backend == "leveldb":
            raise MiniCaffeError(LEVELDB_HINT)
        work()
    except MiniCaffeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
