"""Wiring a filtered, split NetParameter into layers and blobs, as Caffe's Net::Init does:
create each layer, hand it its bottom blobs (a top named as bottom i is the same blob: in
place), create its top blobs, set it up, record its loss weights and parameters, then decide
which layers and bottoms need a backward pass."""
import logging
from collections import OrderedDict

from .blob import Blob
from .errors import LayerError, MiniCaffeError
from .layer import create_layer
from .net_params import NetParams

log = logging.getLogger("minicaffe")


class NetGraph:
    """The layers of a net, their bottom and top blobs (by name and as lists per layer), the
    backward flags and the parameter table; ``outputs`` are the tops no layer consumes."""

    def __init__(self, param):
        self.blobs = OrderedDict()
        self.layers = []
        self.layer_names = []
        self.bottom_names = OrderedDict()
        self.top_names = OrderedDict()
        self.bottom_vecs, self.top_vecs = [], []
        self.bottom_ids, self.top_ids = [], []
        self.bottom_need_backward = []
        self.layer_need_backward = []
        self.blob_loss_weights = OrderedDict()
        self.input_names = []
        self.params = NetParams()
        self._blob_need_backward = {}
        self._available = OrderedDict()  # blob name -> True while not yet consumed
        seen_names = set()
        for li, lp in enumerate(param.layer):
            if lp.name in seen_names:
                log.warning("layer name '%s' is used more than once", lp.name)
            seen_names.add(lp.name)
            self._add_layer(li, lp, param.state.phase)
        self._prune_backward()
        if param.force_backward:
            self._force_backward()
        for layer, need in zip(self.layers, self.bottom_need_backward):
            layer.bottom_need_backward = tuple(need)
        self.outputs = list(self._available)

    def _add_layer(self, li, lp, phase):
        if not lp.HasField("phase"):
            lp.phase = phase
        if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
            raise LayerError(f"layer '{lp.name}': propagate_down has "
                             f"{len(lp.propagate_down)} values for {len(lp.bottom)} bottoms")
        layer = create_layer(lp)
        self.layers.append(layer)
        self.layer_names.append(lp.name)
        bottoms, bids, bneed = self._take_bottoms(lp)
        tops, tids = self._make_tops(lp, layer)
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
        self.bottom_vecs.append(bottoms)
        self.top_vecs.append(tops)
        self.bottom_ids.append(bids)
        self.top_ids.append(tids)
        self.bottom_need_backward.append(bneed)
        need_backward = any(self._blob_need_backward[b] for b in bids)
        need_backward |= self._add_params(li, lp, layer)
        for tname in tids:
            self._blob_need_backward[tname] = need_backward
        self.layer_need_backward.append(need_backward)

    def _take_bottoms(self, lp):
        bottoms, bids, bneed = [], [], []
        for bi, bname in enumerate(lp.bottom):
            if bname not in self._available:
                raise LayerError(f"layer '{lp.name}': unknown bottom blob '{bname}' "
                                 f"(bottom index {bi})")
            need = self._blob_need_backward[bname]
            if len(lp.propagate_down):
                need = bool(lp.propagate_down[bi])
            bottoms.append(self.blobs[bname])
            bids.append(bname)
            bneed.append(need)
            del self._available[bname]
        return bottoms, bids, bneed

    def _make_tops(self, lp, layer):
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
            self._available[tname] = True
            if lp.type == "Input":
                self.input_names.append(tname)
        if layer.auto_top_blobs and not lp.top:
            needed = layer.exact_num_top or layer.min_num_top or 0
            for ti in range(needed):
                tname = f"(automatic){lp.name}_{ti}"
                blob = Blob()
                self.blobs[tname] = blob
                tops.append(blob)
                tids.append(tname)
        return tops, tids

    def _add_params(self, li, lp, layer):
        """Record the layer's parameter blobs; True if any of them is learned (lr_mult 0
        means no gradient is needed for that blob)."""
        n_specs, n_blobs = len(lp.param), len(layer.blobs)
        if n_specs > n_blobs:
            raise LayerError(f"{lp.name}: {n_specs} param specs given, layer has {n_blobs} "
                             f"parameter blob{'s' if n_blobs != 1 else ''}")
        learned = False
        for pi in range(n_blobs):
            spec = lp.param[pi] if pi < n_specs else layer.default_param_spec(pi)
            self.params.append(li, layer, pi, spec)
            pneed = spec.lr_mult != 0
            layer.param_propagate_down[pi] = pneed
            learned |= pneed
        return learned

    def _prune_backward(self):
        """Skip backward for layers that do not lead to a loss or whose bottoms need no diff."""
        under_loss, skip_backp = set(), set()
        for li in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[li]
            contributes = False
            skip_propagate = True
            for ti, tname in enumerate(self.top_ids[li]):
                if layer.loss(ti) or tname in under_loss:
                    contributes = True
                if tname not in skip_backp:
                    skip_propagate = False
                if contributes and not skip_propagate:
                    break
            if self.layer_need_backward[li] and skip_propagate:
                self.layer_need_backward[li] = False
                self.bottom_need_backward[li] = [False] * len(self.bottom_ids[li])
            if not contributes:
                self.layer_need_backward[li] = False
            for bi, bname in enumerate(self.bottom_ids[li]):
                if contributes:
                    under_loss.add(bname)
                else:
                    self.bottom_need_backward[li][bi] = False
                if not self.bottom_need_backward[li][bi]:
                    skip_backp.add(bname)

    def _force_backward(self):
        """NetParameter.force_backward: every layer runs backward, every bottom that allows
        it gets a diff, every parameter a gradient."""
        for li, layer in enumerate(self.layers):
            self.layer_need_backward[li] = True
            for bi in range(len(self.bottom_ids[li])):
                self.bottom_need_backward[li][bi] = (
                    self.bottom_need_backward[li][bi] or layer.allow_force_backward(bi))
            layer.param_propagate_down = [True] * len(layer.blobs)
