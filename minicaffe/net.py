"""Net: a graph of Layers and Blobs built from a NetParameter, as Caffe's Net::Init does.

Init reads one way top to bottom: filter layers by NetState, turn legacy inputs into an
Input layer, insert Split layers where a blob feeds several layers, create and wire each
layer, then decide which layers need a backward pass.
"""
import logging
import os
from collections import OrderedDict

import numpy as np

from . import backend
from .blob import Blob, move_blobs
from .errors import LayerError, MiniCaffeError, ShapeError
from .io.prototxt import read_prototxt
from .io.protobinary import read_binary, write_binary
from .layer import create_layer
from .proto import caffe_pb2
from .upgrade import upgrade_net

log = logging.getLogger("minicaffe")

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


# -- NetState filtering --------------------------------------------------------------------
def state_meets_rule(state, rule):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param):
    """A copy of ``param`` keeping only the layers whose include/exclude rules admit its state."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    for lp in param.layer:
        if len(lp.include) and len(lp.exclude):
            raise LayerError(f"layer '{lp.name}': specify either include rules or exclude "
                             "rules, not both")
        included = not len(lp.include)
        for rule in lp.exclude:
            if state_meets_rule(param.state, rule):
                included = False
        for rule in lp.include:
            if state_meets_rule(param.state, rule):
                included = True
        if included:
            out.layer.add().CopyFrom(lp)
    return out


# -- automatic Split layers (Caffe's insert_splits) ----------------------------------------
def split_layer_name(layer_name, blob_name, blob_idx):
    return f"{blob_name}_{layer_name}_{blob_idx}_split"


def split_blob_name(layer_name, blob_name, blob_idx, split_idx):
    return f"{blob_name}_{layer_name}_{blob_idx}_split_{split_idx}"


def insert_splits(param):
    last_top = {}
    source_of = {}
    consumers = {}
    loss_weight = {}
    for i, lp in enumerate(param.layer):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise LayerError(f"layer '{lp.name}': unknown bottom blob '{name}' (bottom "
                                 f"index {j}); no earlier layer produces it")
            src = last_top[name]
            source_of[(i, j)] = src
            consumers[src] = consumers.get(src, 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            src = last_top[lp.top[j]]
            loss_weight[src] = lp.loss_weight[j]
            if lp.loss_weight[j]:
                consumers[src] = consumers.get(src, 0) + 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    next_split = {}
    for i, lp0 in enumerate(param.layer):
        lp = out.layer.add()
        lp.CopyFrom(lp0)
        for j in range(len(lp.bottom)):
            src = source_of[(i, j)]
            if consumers.get(src, 0) > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                lp.bottom[j] = split_blob_name(param.layer[src[0]].name, lp.bottom[j], src[1], k)
        for j, name in enumerate(lp0.top):
            n = consumers.get((i, j), 0)
            if n > 1:
                w = loss_weight.get((i, j), 0.0)
                sp = out.layer.add()
                sp.name = split_layer_name(lp0.name, name, j)
                sp.type = "Split"
                sp.bottom.append(name)
                for k in range(n):
                    sp.top.append(split_blob_name(lp0.name, name, j, k))
                    if w:
                        sp.loss_weight.append(w if k == 0 else 0.0)
                if w:
                    lp.ClearField("loss_weight")
                    next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out


def load_net_param(source, phase=None, level=0, stages=()):
    """NetParameter from a path or message, with the state set (phase overrides the file's)."""
    if isinstance(source, caffe_pb2.NetParameter):
        param = caffe_pb2.NetParameter()
        param.CopyFrom(source)
        name = param.name or "<net>"
    else:
        name = os.fspath(source)
        param = read_prototxt(name, caffe_pb2.NetParameter())
    upgrade_net(param, name)
    if phase is not None:
        param.state.phase = phase
    if level:
        param.state.level = level
    if stages:
        param.state.ClearField("stage")
        param.state.stage.extend(stages)
    return param


class Net:
    """A network in TRAIN or TEST phase.

    pycaffe's forms are accepted: ``Net(model, phase)``, ``Net(model, weights, phase)`` and
    ``Net(model, phase, weights=...)``; ``model`` may also be a NetParameter.
    """

    def __init__(self, model, *args, weights=None, phase=None, level=0, stages=()):
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
        self.blobs = OrderedDict()
        self.layers = []
        self._layer_names = []
        self.bottom_names = OrderedDict()
        self.top_names = OrderedDict()
        self._bottom_vecs, self._top_vecs = [], []
        self._bottom_ids, self._top_ids = [], []
        self._bottom_need_backward = []
        self._layer_need_backward = []
        self.blob_loss_weights = OrderedDict()
        self._input_names = []
        self._blob_need_backward = {}
        self._params = []            # every parameter blob, one entry per (layer, index)
        self._param_owner = []       # index into _params of the owner, or -1
        self._param_display_names = []
        self._param_names_index = {}
        self._param_layer_indices = []
        self._param_specs = []
        available = OrderedDict()  # blob name -> True while not yet consumed
        seen_names = set()

        for li, lp in enumerate(param.layer):
            if lp.name in seen_names:
                log.warning("layer name '%s' is used more than once", lp.name)
            seen_names.add(lp.name)
            if not lp.HasField("phase"):
                lp.phase = param.state.phase
            if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
                raise LayerError(f"layer '{lp.name}': propagate_down has "
                                 f"{len(lp.propagate_down)} values for {len(lp.bottom)} bottoms")
            layer = create_layer(lp)
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            bottoms, bids, bneed = [], [], []
            for bi, bname in enumerate(lp.bottom):
                if bname not in available:
                    raise LayerError(f"layer '{lp.name}': unknown bottom blob '{bname}' "
                                     f"(bottom index {bi})")
                blob = self.blobs[bname]
                need = self._blob_need_backward[bname]
                if len(lp.propagate_down):
                    need = bool(lp.propagate_down[bi])
                bottoms.append(blob)
                bids.append(bname)
                bneed.append(need)
                del available[bname]
            tops, tids = [], []
            for ti, tname in enumerate(lp.top):
                if ti < len(lp.bottom) and lp.bottom[ti] == tname:
                    blob = self.blobs[tname]          # in place: top i is bottom i
                elif tname in self.blobs:
                    raise LayerError(f"layer '{lp.name}': top blob '{tname}' is produced by "
                                     "more than one layer (in place needs top i == bottom i)")
                else:
                    blob = Blob()
                    self.blobs[tname] = blob
                tops.append(blob)
                tids.append(tname)
                available[tname] = True
                if lp.type == "Input":
                    self._input_names.append(tname)
            if layer.auto_top_blobs and not lp.top:
                needed = layer.exact_num_top or layer.min_num_top or 0
                for ti in range(needed):
                    tname = f"(automatic){lp.name}_{ti}"
                    blob = Blob()
                    self.blobs[tname] = blob
                    tops.append(blob)
                    tids.append(tname)
            try:
                layer.setup(bottoms, tops)
            except MiniCaffeError:
                raise
            except (ValueError, IndexError, TypeError) as e:
                raise LayerError(f"{lp.type} layer '{lp.name}': setup failed: {e}") from e
            log.debug("Setting up %s: top shapes %s", lp.name, [tuple(t.shape) for t in tops])
            for ti, tname in enumerate(tids):
                self.blob_loss_weights[tname] = layer.loss(ti)
            self.bottom_names[lp.name] = bids
            self.top_names[lp.name] = tids
            self._bottom_vecs.append(bottoms)
            self._top_vecs.append(tops)
            self._bottom_ids.append(bids)
            self._top_ids.append(tids)
            self._bottom_need_backward.append(bneed)
            # Parameters: lr_mult 0 means no gradient is needed for that blob.
            n_specs, n_blobs = len(lp.param), len(layer.blobs)
            if n_specs > n_blobs:
                raise LayerError(f"{lp.name}: {n_specs} param specs given, layer has {n_blobs} "
                                 f"parameter blob{'s' if n_blobs != 1 else ''}")
            need_backward = any(self._blob_need_backward[b] for b in bids)
            for pi in range(n_blobs):
                spec = lp.param[pi] if pi < n_specs else layer.default_param_spec(pi)
                self._append_param(li, layer, pi, spec)
                pneed = spec.lr_mult != 0
                layer.param_propagate_down[pi] = pneed
                need_backward |= pneed
            for tname in tids:
                self._blob_need_backward[tname] = need_backward
            self._layer_need_backward.append(need_backward)

        self._prune_backward(param)
        for layer, need in zip(self.layers, self._bottom_need_backward):
            layer.bottom_need_backward = tuple(need)
        self._xp = backend.xp()
        self._outputs = list(available)
        self.blob_names = list(self.blobs)
        self.layer_by_name = {n: l for n, l in zip(self._layer_names, self.layers)}

    def _append_param(self, li, layer, pi, spec):
        name = spec.name
        idx = len(self._params)
        self._param_layer_indices.append((li, pi))
        self._param_specs.append(spec)
        self._param_display_names.append(name or str(idx))
        if not name or name not in self._param_names_index:
            if name:
                self._param_names_index[name] = idx
            self._param_owner.append(-1)
            self._params.append(layer.blobs[pi])
            return
        owner = self._param_names_index[name]
        self._param_owner.append(owner)
        owner_blob = self._params[owner]
        this_blob = layer.blobs[pi]
        strict = spec.share_mode != caffe_pb2.ParamSpec.PERMISSIVE
        if strict and tuple(owner_blob.shape) != tuple(this_blob.shape):
            raise ShapeError(f"layer '{layer.name}': cannot share param '{name}': owner shape "
                             f"{tuple(owner_blob.shape)}, this shape {tuple(this_blob.shape)}")
        if not strict and owner_blob.count != this_blob.count:
            raise ShapeError(f"layer '{layer.name}': cannot share param '{name}': owner count "
                             f"{owner_blob.count}, this count {this_blob.count}")
        if tuple(owner_blob.shape) == tuple(this_blob.shape):
            layer.blobs[pi] = owner_blob
        else:
            this_blob.share_data(owner_blob)
            this_blob.share_diff(owner_blob)
        self._params.append(layer.blobs[pi])
        # The owner's lr/decay multipliers govern the shared blob's update.

    def _prune_backward(self, param):
        """Skip backward for layers that do not lead to a loss or whose bottoms need no diff."""
        under_loss, skip_backp = set(), set()
        for li in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[li]
            contributes = False
            skip_propagate = True
            for ti, tname in enumerate(self._top_ids[li]):
                if layer.loss(ti) or tname in under_loss:
                    contributes = True
                if tname not in skip_backp:
                    skip_propagate = False
                if contributes and not skip_propagate:
                    break
            if self._layer_need_backward[li] and skip_propagate:
                self._layer_need_backward[li] = False
                self._bottom_need_backward[li] = [False] * len(self._bottom_ids[li])
            if not contributes:
                self._layer_need_backward[li] = False
            for bi, bname in enumerate(self._bottom_ids[li]):
                if contributes:
                    under_loss.add(bname)
                else:
                    self._bottom_need_backward[li][bi] = False
                if not self._bottom_need_backward[li][bi]:
                    skip_backp.add(bname)
        if param.force_backward:
            for li, layer in enumerate(self.layers):
                self._layer_need_backward[li] = True
                for bi in range(len(self._bottom_ids[li])):
                    self._bottom_need_backward[li][bi] = (
                        self._bottom_need_backward[li][bi] or layer.allow_force_backward(bi))
                layer.param_propagate_down = [True] * len(layer.blobs)

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
        return [(b, s) for b, s, o in zip(self._params, self._param_specs, self._param_owner)
                if o < 0]

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
            layer.reshape(bottom, top)
            layer.forward(bottom, top)
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
        return loss

    def clear_param_diffs(self):
        for b in self._params:
            b.xdiff.fill(0)

    # -- weights -----------------------------------------------------------------------------
    def to_proto(self, write_diff=False):
        out = caffe_pb2.NetParameter()
        out.name = self.param.name
        for name, layer in zip(self._layer_names, self.layers):
            lp = out.layer.add()
            lp.CopyFrom(layer.layer_param)
            lp.ClearField("blobs")
            for b in layer.blobs:
                b.to_proto(lp.blobs.add(), write_diff=write_diff)
        return out

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
        if isinstance(weights, caffe_pb2.NetParameter):
            src, where = weights, "<NetParameter>"
        else:
            where = os.fspath(weights)
            if where.endswith((".h5", ".hdf5")):
                raise MiniCaffeError(f"{where}: HDF5 weights are not supported; "
                                     "use a binary .caffemodel")
            src = read_binary(where, caffe_pb2.NetParameter())
        if len(src.layers) and not len(src.layer):
            upgrade_net(src, where)
        for lp in src.layer:
            if lp.name not in self.layer_by_name:
                log.info("Ignoring source layer %s", lp.name)
                continue
            layer = self.layer_by_name[lp.name]
            if len(lp.blobs) != len(layer.blobs):
                if not len(lp.blobs):
                    continue
                raise ShapeError(f"{where}: layer '{lp.name}' has {len(lp.blobs)} blobs in the "
                                 f"weights file but {len(layer.blobs)} in the net")
            for bi, (bp, blob) in enumerate(zip(lp.blobs, layer.blobs)):
                from .io.protobinary import blobproto_shape
                shape = blobproto_shape(bp)
                if tuple(shape) != tuple(blob.shape):
                    legacy_ok = (not bp.HasField("shape") and
                                 int(np.prod(shape)) == blob.count)
                    if not legacy_ok:
                        raise ShapeError(
                            f"{where}: cannot copy param {bi} of layer '{lp.name}': shape "
                            f"mismatch, source {tuple(shape)} vs target {tuple(blob.shape)}")
                blob.from_proto(bp, reshape=False)

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
        self._params = [None] * len(self._params)
        for k, (li, pi) in enumerate(self._param_layer_indices):
            self._params[k] = self.layers[li].blobs[pi]

    def __repr__(self):
        return f"<Net '{self.name}' {len(self.layers)} layers, phase {'TRAIN' if self.phase == TRAIN else 'TEST'}>"
