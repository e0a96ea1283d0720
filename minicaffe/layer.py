"""Layer base class and the registry keyed by the prototxt ``type`` string.

Every layer has Caffe's four verbs:

* ``layer_setup(bottom, top)``: read the layer's parameters, create parameter blobs;
* ``reshape(bottom, top)``: size the tops and scratch buffers from the bottoms (called before
  every forward, so it must be cheap when nothing changed);
* ``forward(bottom, top)``;
* ``backward(top, propagate_down, bottom)``: write bottom diffs (overwrite) where
  ``propagate_down[i]`` and *accumulate* parameter gradients into ``self.blobs[k].xdiff``
  where ``self.param_propagate_down[k]`` (the solver clears them; accumulation is what makes
  shared parameters and ``iter_size`` work).

``bottom`` and ``top`` are lists of Blobs; in-place layers get the same Blob in both.
"""
from . import backend
from .blob import Blob
from .errors import BlobSizeError, LayerError, ShapeError
from .proto import caffe_pb2

_REGISTRY = {}


def register(*type_names):
    """Class decorator: make a layer class available under one or more prototxt type strings."""
    def deco(cls):
        for name in type_names:
            _REGISTRY[name] = cls
        if not getattr(cls, "type", None):
            cls.type = type_names[0]
        return cls
    return deco


def layer_types():
    """The registered type strings (``import minicaffe`` has registered the built-in layers)."""
    return sorted(_REGISTRY)


def create_layer(param):
    cls = _REGISTRY.get(param.type)
    if cls is None:
        import difflib
        close = difflib.get_close_matches(param.type, list(_REGISTRY), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
            " (minicaffe.layer_types() lists the known types)"
        raise LayerError(f"layer '{param.name}': unknown layer type '{param.type}'{hint}")
    return cls(param)


def shape_text(shape):
    """A shape as "(2, 3)", also for one axis ("(5)") and none ("()")."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


class Layer:
    type = ""
    # Bottom/top counts checked before setup (None: no constraint).
    exact_num_bottom = None
    min_num_bottom = None
    max_num_bottom = None
    exact_num_top = None
    min_num_top = None
    max_num_top = None
    equal_num_bottom_top = False
    # A layer that creates its tops when none are named (Caffe's AutoTopBlobs).
    auto_top_blobs = False
    # Layers whose name ends with "Loss" get loss_weight 1 on top 0 unless told otherwise.
    is_loss = False
    # False when the owner promises never to call backward (a solver's test nets): layers may
    # then skip keeping copies of their inputs for gradients (Net.set_forward_only).
    keeps_backward_state = True
    # Which bottoms backward must give a gradient, once a Net has worked it out; None (a layer
    # used on its own) means any may.
    bottom_need_backward = None

    def __init__(self, param):
        self.layer_param = param
        self.name = param.name
        self.phase = param.phase
        self.blobs = []
        self.param_propagate_down = []
        self.loss_weights = []
        if len(param.blobs):
            for bp in param.blobs:
                b = Blob()
                b.from_proto(bp)
                self.blobs.append(b)

    # -- the four verbs ------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{self.type} layer has no reshape")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{self.type} layer has no forward")

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError(f"{self.type} layer has no backward")

    def allow_force_backward(self, bottom_index):
        return True

    def default_param_spec(self, param_index):
        """The ParamSpec (lr_mult, decay_mult) for parameter blob ``param_index`` when the
        prototxt gives no ``param`` for it. Layers whose blobs are not learned (BatchNorm's
        statistics) return lr_mult 0 here."""
        return caffe_pb2.ParamSpec()

    # -- driver --------------------------------------------------------------------------------
    def setup(self, bottom, top):
        self.check_blob_counts(bottom, top)
        try:
            self.layer_setup(bottom, top)
            if len(self.param_propagate_down) != len(self.blobs):
                self.param_propagate_down = [True] * len(self.blobs)
            self.reshape(bottom, top)
        except BlobSizeError as e:  # the blob knows its shape, not whose it is
            self.fail(str(e))
        self.set_loss_weights(top)

    def set_loss_weights(self, top):
        weights = list(self.layer_param.loss_weight)
        if not weights and self.is_loss and top:
            weights = [1.0] + [0.0] * (len(top) - 1)
        if weights and len(weights) != len(top):
            self.fail(f"{len(weights)} loss_weight values given for {len(top)} top blobs")
        self.loss_weights = weights + [0.0] * (len(top) - len(weights))
        for w, t in zip(self.loss_weights, top):
            if w != 0:
                t.xdiff[...] = w

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    def check_blob_counts(self, bottom, top):
        nb, nt = len(bottom), len(top)

        def want(what, n, exact, lo, hi):
            if exact is not None and n != exact:
                self.fail(f"takes exactly {exact} {what} blob(s), got {n}")
            if lo is not None and n < lo:
                self.fail(f"takes at least {lo} {what} blob(s), got {n}")
            if hi is not None and n > hi:
                self.fail(f"takes at most {hi} {what} blob(s), got {n}")
        want("bottom", nb, self.exact_num_bottom, self.min_num_bottom, self.max_num_bottom)
        want("top", nt, self.exact_num_top, self.min_num_top, self.max_num_top)
        if self.equal_num_bottom_top and nb != nt:
            self.fail(f"needs as many top as bottom blobs, got {nb} bottom and {nt} top")

    # -- helpers for subclasses ----------------------------------------------------------------
    def fail(self, message, cls=LayerError):
        raise cls(f"{self.type} layer '{self.name}': {message}")

    def canonical_axis(self, blob, axis, what="axis"):
        """``axis`` of ``blob`` counted from the front (negative counts from the back)."""
        try:
            return blob.canonical_axis_index(int(axis))
        except IndexError:
            self.fail(f"{what} {axis} is out of range for a {blob.num_axes}-axis bottom blob "
                      f"of shape {shape_text(blob.shape)}")

    def refuse_in_place(self, bottom, top):
        """Fail when a top is one of the bottoms (layers that cannot run in place)."""
        for t in top:
            if any(t is b for b in bottom):
                self.fail("does not allow in-place computation (give the top blob its own name)")

    def legacy_dims(self, blob, what):
        """Caffe's (num, channels, height, width) of ``blob``, which may have at most 4 axes."""
        if blob.num_axes > 4:
            self.fail(f"{what} needs at most 4 axes (Caffe's num/channels/height/width), got "
                      f"shape {shape_text(blob.shape)}", ShapeError)
        return blob.num, blob.channels, blob.height, blob.width

    def init_param_blobs(self, specs):
        """Create the parameter blobs from ``specs`` [(shape, filler), ...], or, when the layer
        already holds blobs (weights given with the layer), check their number and shapes."""
        if self.blobs:
            if len(self.blobs) != len(specs):
                self.fail(f"has {len(self.blobs)} parameter blobs, expected {len(specs)}")
            for k, (b, (shape, _)) in enumerate(zip(self.blobs, specs)):
                if tuple(b.shape) != tuple(shape):
                    self.fail(f"parameter blob {k} has shape {tuple(b.shape)}, expected "
                              f"{tuple(shape)}", ShapeError)
            return
        self.blobs = [self.make_param_blob(shape, filler) for shape, filler in specs]

    def make_param_blob(self, shape, filler_param, dtype=None):
        """A new parameter blob of ``shape`` filled by ``filler_param`` (a FillerParameter)."""
        from .fillers import fill
        b = Blob(shape) if dtype is None else Blob(shape, dtype=dtype)
        fill(b, filler_param)
        return b

    @staticmethod
    def xp_of(blob):
        return backend.get_array_module(blob.xdata)

    def __repr__(self):
        return f"<{self.type} layer '{self.name}'>"
