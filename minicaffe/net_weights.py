"""A net's weights as a NetParameter (what a .caffemodel holds), and copying weights into a
net's layers by layer name, as Caffe's Net::CopyTrainedLayersFrom does: from a binary
.caffemodel, or from an HDF5 one (``hdf5_weights``) when the file is HDF5."""
import logging
import os

import numpy as np

from .errors import ShapeError
from .hdf5_weights import Hdf5Weights, copy_hdf5_weights
from .io.hdf5_file import is_hdf5
from .io.protobinary import blobproto_shape, read_caffemodel
from .proto import caffe_pb2
from .upgrade import upgrade_net

log = logging.getLogger("minicaffe")


def weights_proto(name, layers, write_diff=False):
    """A NetParameter named ``name`` with every layer's parameter and its blobs."""
    out = caffe_pb2.NetParameter()
    out.name = name
    for layer in layers:
        lp = out.layer.add()
        lp.CopyFrom(layer.layer_param)
        lp.ClearField("blobs")
        for b in layer.blobs:
            b.to_proto(lp.blobs.add(), write_diff=write_diff)
    return out


def read_weights(weights):
    """(NetParameter or Hdf5Weights, where) from a .caffemodel path (binary or HDF5, told
    apart by content as Caffe's H5Fis_hdf5) or a NetParameter; legacy V1 layers are
    upgraded."""
    if isinstance(weights, caffe_pb2.NetParameter):
        src, where = weights, "<NetParameter>"
    else:
        where = os.fspath(weights)
        if is_hdf5(where):
            return Hdf5Weights(where), where
        src = read_caffemodel(where)
    if len(src.layers) and not len(src.layer):
        upgrade_net(src, where)
    return src, where


def copy_weights(layer_by_name, src, where):
    """Copy the blobs of each layer of ``src`` into the same-named layer; layers the net
    lacks are ignored, as are source layers without blobs."""
    if isinstance(src, Hdf5Weights):
        copy_hdf5_weights(layer_by_name, src)
        return
    if len(src.layer) and not any(lp.name in layer_by_name for lp in src.layer):
        log.warning("%s: no layer name matches the net: no weights copied", where)
    for lp in src.layer:
        if lp.name not in layer_by_name:
            log.info("Ignoring source layer %s", lp.name)
            continue
        layer = layer_by_name[lp.name]
        if len(lp.blobs) != len(layer.blobs):
            if not len(lp.blobs):
                continue
            raise ShapeError(f"{where}: layer '{lp.name}' has {len(lp.blobs)} blobs in the "
                             f"weights file {[blobproto_shape(b) for b in lp.blobs]} but "
                             f"{len(layer.blobs)} in the net {[b.shape for b in layer.blobs]}")
        for bi, (bp, blob) in enumerate(zip(lp.blobs, layer.blobs)):
            shape = blobproto_shape(bp)
            if tuple(shape) != tuple(blob.shape):
                legacy_ok = (not bp.HasField("shape") and
                             int(np.prod(shape)) == blob.count)
                if not legacy_ok:
                    raise ShapeError(
                        f"{where}: cannot copy param {bi} of layer '{lp.name}': shape "
                        f"mismatch, source {tuple(shape)} vs target {tuple(blob.shape)}")
            blob.from_proto(bp, reshape=False)
