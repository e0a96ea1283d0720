"""compute_image_mean: the mean image of an LMDB of Datums, written as a .binaryproto.

As Caffe's tool does, the result is a BlobProto with the legacy num/channels/height/width fields
(1 x C x H x W) that ``transform_param { mean_file: ... }`` and ``minicaffe.io.read_mean`` read.
"""

import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .db import datum_to_array, iter_items, parse_datum
from .tool_cli import run_tool, tool_parser


def mean_to_blobproto(mean):
    """A (C, H, W) mean image as Caffe's compute_image_mean writes it (legacy 4-D fields)."""
    m = np.asarray(mean, dtype=np.float32)
    if m.ndim != 3:
        raise MiniCaffeError(f"a mean image is (C, H, W), got shape {m.shape}")
    bp = caffe_pb2.BlobProto(num=1, channels=m.shape[0], height=m.shape[1], width=m.shape[2])
    bp.data.extend(m.ravel().tolist())
    return bp


def compute_image_mean(db_path, out_path=None, log=None, chunk=1000):
    """Mean image (float32, C x H x W) of every Datum in the LMDB ``db_path``.

    Raw uint8 records are summed in chunks (vectorised); encoded ones are decoded first, as
    Caffe does. Writes ``out_path`` (.binaryproto) when given.
    """
    total = None
    shape = None
    count = 0
    pending = []

    def flush():
        nonlocal total
        if not pending:
            return
        if isinstance(pending[0], bytes):
            block = np.frombuffer(b"".join(pending), dtype=np.uint8).reshape((len(pending), -1))
            s = block.sum(axis=0, dtype=np.int64).astype(np.float64)
        else:
            s = np.sum(np.stack(pending).astype(np.float64), axis=0).ravel()
        total = s if total is None else total + s
        pending.clear()

    for key, value in iter_items(db_path):
        d = parse_datum(value)
        what = f"datum {key.decode(errors='replace')} of {db_path}"
        if not d.encoded and len(d.data):
            chw = (d.channels, d.height, d.width)
            if len(d.data) != int(np.prod(chw)):
                raise MiniCaffeError(f"{what}: incorrect data field size {len(d.data)} for shape "
                                     f"{chw}")
            item = bytes(d.data)
        else:
            arr = datum_to_array(d, what=what)
            chw = arr.shape
            item = arr
        if shape is None:
            shape = chw
        elif chw != shape:
            raise MiniCaffeError(f"{what} has shape {chw}, the first datum {shape}; a mean "
                                 "image needs equal sizes")
        if pending and type(pending[0]) is not type(item):
            flush()
        pending.append(item)
        count += 1
        if len(pending) >= chunk:
            flush()
    flush()
    if count == 0:
        raise MiniCaffeError(f"LMDB {db_path} is empty: no mean to compute")
    mean = (total / count).astype(np.float32).reshape(shape)
    if out_path:
        from ..io.protobinary import write_binary
        write_binary(mean_to_blobproto(mean), out_path)
    if log is not None:
        log(f"Processed {count} records of {db_path}")
        log(f"Number of channels: {shape[0]}")
        for c in range(shape[0]):
            log(f"mean_value channel [{c}]: {float(mean[c].mean()):.6g}")
        if out_path:
            log(f"Wrote the mean image to {out_path}")
    return mean


def main_compute_image_mean(argv=None):
    ap = tool_parser("compute_image_mean",
                     "Compute the mean image of an LMDB of Datums (as Caffe's tool).")
    ap.add_argument("input_db")
    ap.add_argument("output_file", nargs="?")
    args = ap.parse_args(argv)
    return run_tool(args, lambda: compute_image_mean(args.input_db, args.output_file, log=print))
