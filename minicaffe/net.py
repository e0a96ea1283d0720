"""Net: a graph of Layers and Blobs built from a NetParameter, and running it.

Building reads one way top to bottom: load the model with its NetState (``net_state``),
filter the layers by that state, insert Split layers where a blob feeds several layers
(``net_splits``), then wire the layers to their blobs and decide which need a backward pass
(``net_graph``). This module runs the result: forward/backward, the pycaffe views (blobs,
params, inputs, outputs), device placement and weights (``net_weights``).
"""
import os
from collections import OrderedDict

import numpy as np

from . import backend
from .blob import move_blobs
from .errors import BlobSizeError, LayerError, ShapeError
from .io.protobinary import write_binary
from .net_debug_info import backward_debug_info, backward_norms, forward_debug_info
from .net_graph import NetGraph
from .net_splits import insert_splits
from .net_state import filter_net, load_net_param
from .net_weights import copy_weights, read_weights, weights_proto
from .proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def _weights_and_phase(model, args, weights, phase):
    """(weights, phase) from pycaffe's positional forms ``[weights,] phase``; a NetParameter
    with a phase in its state needs none."""
    args = list(args)
    if args and isinstance(args[0], (str, os.PathLike)):
        weights = args.pop(0)
    if args:
        phase = args.pop(0)
    if args:
        raise TypeError("Net(model, [weights,] phase)")
    if phase is None:
        if isinstance(model, caffe_pb2.NetParameter) and model.state.HasField("phase"):
            phase = model.state.phase
        else:
            raise TypeError("Net needs a phase: caffe.TRAIN or caffe.TEST")
    return weights, phase


class Net:
    """A network in TRAIN or TEST phase.

    pycaffe's forms are accepted: ``Net(model, phase)``, ``Net(model, weights, phase)`` and
    ``Net(model, phase, weights=...)``; ``model`` may also be a NetParameter.
    """

    def __init__(self, model, *args, weights=None, phase=None, level=0, stages=()):
        weights, phase = _weights_and_phase(model, args, weights, phase)
        self.phase = phase
        self.source = model if not isinstance(model, caffe_pb2.NetParameter) else "<NetParameter>"
        param = load_net_param(model, phase, level, stages)
        self._init(param)
        if weights is not None:
            self.copy_from(weights)

    # -- construction ------------------------------------------------------------------------
    def _init(self, in_param):
        param = insert_splits(filter_net(in_param))
        self.param = param
        self.name = param.name
        g = NetGraph(param)
        self.blobs, self.layers, self._layer_names = g.blobs, g.layers, g.layer_names
        self.bottom_names, self.top_names = g.bottom_names, g.top_names
        self._bottom_vecs, self._top_vecs = g.bottom_vecs, g.top_vecs
        self._bottom_ids, self._top_ids = g.bottom_ids, g.top_ids
        self._bottom_need_backward = g.bottom_need_backward
        self._layer_need_backward = g.layer_need_backward
        self.blob_loss_weights = g.blob_loss_weights
        self._input_names, self._outputs = g.input_names, g.outputs
        self._params = g.params
        self._xp = backend.xp()
        self.blob_names = list(self.blobs)
        self.layer_by_name = {n: l for n, l in zip(self._layer_names, self.layers)}
        # Caffe's per-layer mean |value| lines (net_debug_info); the solver sets it.
        self.debug_info = bool(param.debug_info)

    # -- pycaffe surface ---------------------------------------------------------------------
    @property
    def params(self):
        out = OrderedDict()
        for name, layer in zip(self._layer_names, self.layers):
            if layer.blobs:
                out[name] = list(layer.blobs)
        return out

    @property
    def inputs(self):
        return list(self._input_names)

    @property
    def outputs(self):
        return list(self._outputs)

    @property
    def learnable_params(self):
        """Owned parameter blobs with their ParamSpec (lr_mult, decay_mult)."""
        return self._params.learnable()

    def layer_need_backward(self, i):
        return self._layer_need_backward[i]

    def _index(self, name, default):
        if name is None:
            return default
        if name not in self._layer_names:
            raise KeyError(f"no layer named '{name}'")
        return self._layer_names.index(name)

    # -- device placement ----------------------------------------------------------------------
    def _all_blobs(self):
        out = list(self.blobs.values())
        for layer in self.layers:
            out.extend(layer.blobs)
        return out

    def to_module(self, xp):
        """Move every blob (activations and parameters) to array module ``xp`` (NumPy or
        CuPy), keeping values and shared buffers. Layers rebuild their scratch buffers at
        the next reshape."""
        move_blobs(self._all_blobs(), xp)
        self._xp = xp

    def _follow_mode(self):
        """A net built in one mode and run in another (caffe.set_mode_gpu() after building it)
        moves its blobs first, as Caffe's SyncedMemory would on first use."""
        xp = backend.xp()
        if xp is not self._xp:
            self.to_module(xp)

    def reshape(self):
        self._follow_mode()
        for li, layer in enumerate(self.layers):
            layer.reshape(self._bottom_vecs[li], self._top_vecs[li])

    def forward_from_to(self, start=0, end=None):
        """Run layers ``start`` to ``end``; returns the weighted loss.

        On the CPU the loss is a Python float. In GPU mode it is a 0-d float64 device array,
        so that no iteration waits for the device: ``float()`` it when the value is needed
        (the solver does so once per display interval)."""
        self._follow_mode()
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        device_loss = None
        for li in range(start, end + 1):
            layer = self.layers[li]
            bottom, top = self._bottom_vecs[li], self._top_vecs[li]
            try:
                layer.reshape(bottom, top)
            except BlobSizeError as e:   # a reshaped input: the blob knows its shape, not whose
                layer.fail(str(e))
            layer.forward(bottom, top)
            if self.debug_info:
                forward_debug_info(self, li)
            for ti, w in enumerate(layer.loss_weights):
                if w:
                    t = top[ti].xdata
                    if type(t) is np.ndarray:
                        loss += float((t * w).sum())
                    else:
                        term = t.sum(dtype=np.float64) * w
                        device_loss = term if device_loss is None else device_loss + term
        if device_loss is not None:
            return device_loss + loss if loss else device_loss
        return loss

    def backward_from_to(self, start=None, end=0):
        self._follow_mode()
        start = len(self.layers) - 1 if start is None else start
        for li in range(start, end - 1, -1):
            if self._layer_need_backward[li]:
                self.layers[li].backward(self._top_vecs[li], self._bottom_need_backward[li],
                                         self._bottom_vecs[li])
                if self.debug_info:
                    backward_debug_info(self, li)

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's forward: set inputs from kwargs, run, return {output name: data}."""
        for name, value in kwargs.items():
            if name not in self.blobs:
                raise KeyError(f"no blob named '{name}' in the net")
            blob = self.blobs[name]
            if not backend.is_device_array(value):
                value = np.asarray(value)
            if tuple(value.shape) != tuple(blob.shape):
                raise ShapeError(f"input '{name}': given shape {tuple(value.shape)}, blob "
                                 f"shape {tuple(blob.shape)} (reshape the blob first)")
            blob.data = value
        s = self._index(start, 0)
        e = self._index(end, len(self.layers) - 1)
        self._last_loss = self.forward_from_to(s, e)
        names = set(self.outputs if end is None else self._top_ids[e]) | set(blobs or ())
        return {n: self.blobs[n].data for n in self.blobs if n in names}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        for name, value in kwargs.items():
            if name not in self.blobs:
                raise KeyError(f"no blob named '{name}' in the net")
            self.blobs[name].diff = value
        s = self._index(start, len(self.layers) - 1)
        e = self._index(end, 0)
        self.backward_from_to(s, e)
        names = set(self.inputs if end is None else self._bottom_ids[e]) | set(diffs or ())
        return {n: self.blobs[n].diff for n in self.blobs if n in names}

    def set_input_arrays(self, data, labels):
        """pycaffe's set_input_arrays: (N, C, H, W) float32 data and N labels for the first
        layer, which must be MemoryData; forward then serves them batch_size at a time."""
        if not self.layers or self.layers[0].type != "MemoryData":
            raise LayerError("set_input_arrays may only be called if the first layer is a "
                             "MemoryData layer")
        self.layers[0].reset(data, labels)

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe's forward_all: run inputs of any length through the net in batches of its
        input batch size; returns {output (and ``blobs``) name: array over all inputs}."""
        names = list(self.outputs) + [b for b in (blobs or ()) if b not in self.outputs]
        if not kwargs:
            return {n: np.array(v, copy=True) for n, v in self.forward(blobs=blobs).items()}
        lengths = {len(v) for v in kwargs.values()}
        if len(lengths) != 1:
            raise ShapeError(f"forward_all: inputs have different lengths {sorted(lengths)}")
        total = lengths.pop()
        batch = self.blobs[next(iter(kwargs))].shape[0]
        pieces = {n: [] for n in names}
        for start in range(0, total, batch):
            chunk = {k: np.asarray(v[start:start + batch]) for k, v in kwargs.items()}
            n = len(next(iter(chunk.values())))
            if n < batch:  # pad the last batch, as pycaffe does, then drop the padding
                chunk = {k: np.concatenate([v, np.zeros((batch - n,) + v.shape[1:], v.dtype)])
                         for k, v in chunk.items()}
            out = self.forward(blobs=blobs, **chunk)
            for name in names:
                arr = np.asarray(out[name])
                # Scalar outputs (losses, accuracy) give one value per batch.
                pieces[name].append(arr.reshape(1).copy() if arr.ndim == 0 else arr[:n].copy())
        return {n: np.concatenate(p) for n, p in pieces.items()}

    def forward_backward(self):
        loss = self.forward_from_to()
        self.backward_from_to()
        if self.debug_info:
            backward_norms(self)
        return loss

    def clear_param_diffs(self):
        for b in self._params.blobs:
            b.xdiff.fill(0)

    # -- weights -----------------------------------------------------------------------------
    def to_proto(self, write_diff=False):
        return weights_proto(self.param.name, self.layers, write_diff)

    def save(self, path):
        """Write the weights as a binary .caffemodel that BVLC Caffe reads."""
        write_binary(self.to_proto(), os.fspath(path))

    def copy_from(self, weights):
        """Copy weights from a .caffemodel (or NetParameter), matching layers by name.

        Several comma-separated files are applied in order, as ``caffe train --weights``.
        """
        if isinstance(weights, str) and "," in weights:
            for w in weights.split(","):
                self.copy_from(w)
            return
        copy_weights(self.layer_by_name, *read_weights(weights))

    def set_forward_only(self, forward_only=True):
        """Promise that backward will not be called (a solver's test nets): layers then keep
        no input copies for gradients (an in-place Scale's saved input, the size of its
        activation). A backward that needs them fails with the layer's name."""
        for layer in self.layers:
            layer.keeps_backward_state = not forward_only

    def share_with(self, other):
        """Use ``other``'s parameter blobs (test nets share the train net's weights)."""
        for name, layer in zip(self._layer_names, self.layers):
            if name not in other.layer_by_name:
                continue
            src = other.layer_by_name[name]
            if len(src.blobs) != len(layer.blobs):
                raise ShapeError(f"layer '{name}': {len(src.blobs)} vs {len(layer.blobs)} blobs")
            for i, (a, b) in enumerate(zip(src.blobs, layer.blobs)):
                if tuple(a.shape) != tuple(b.shape):
                    raise ShapeError(f"cannot share param {i} of layer '{name}': shapes "
                                     f"{tuple(a.shape)} and {tuple(b.shape)}")
                layer.blobs[i] = a
        self._params.rebind(self.layers)

    def __repr__(self):
        return f"<Net '{self.name}' {len(self.layers)} layers, phase {'TRAIN' if self.phase == TRAIN else 'TEST'}>"
