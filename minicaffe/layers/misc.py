"""Assorted Caffe layers: ArgMax, MVN, Reduction, Embed, Parameter and BatchReindex, with BVLC
Caffe's parameters, defaults, formulas and output-shape rules.

* ArgMax (argmax_param): indices (and optionally values) of the top_k largest entries, per item
  over all of an item's values, or along ``axis``. No backward. Ties go to the larger index, as
  Caffe's sort of (value, index) pairs in descending order does.
* MVN (mvn_param): subtract the mean and, by default, divide by (std + eps) -- eps is added to
  the standard deviation, not to the variance -- per (item, channel) or per item
  (``across_channels``). The top is 4-D (num, channels, height, width), as in Caffe.
* Reduction (reduction_param): SUM / ASUM / SUMSQ / MEAN over every axis from ``axis`` on,
  times ``coeff``; the top keeps the axes before ``axis``.
* Embed (embed_param): a lookup table W (input_dim, num_output) indexed by the integer values of
  the bottom, plus an optional bias; gradients reach the parameters only.
* Parameter (parameter_param): no bottom; the top is a view of the layer's single parameter blob
  of ``shape`` (zero-initialised, as in Caffe).
* BatchReindex: top[i] = bottom0[bottom1[i]] along the first axis; backward sums the rows back.
"""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2
from .conv import init_param_blobs

ReductionOp = caffe_pb2.ReductionParameter


def _fmt(shape):
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _scatter_add_rows(xp, dst, idx, src):
    """dst[idx[i]] += src[i] for every i, repeated indices accumulating."""
    at = getattr(xp.add, "at", None)
    if at is not None:
        at(dst, idx, src)
    else:  # older CuPy: ufunc.at missing
        import cupyx
        cupyx.scatter_add(dst, idx, src)


def _legacy_dims(layer, blob):
    """Caffe's (num, channels, height, width) of a blob with at most 4 axes."""
    if blob.num_axes > 4:
        layer.fail(f"needs a bottom with at most 4 axes (it uses Caffe's num/channels/height/"
                   f"width), got shape {_fmt(blob.shape)}", ShapeError)
    return blob.num, blob.channels, blob.height, blob.width


def _check_not_in_place(layer, bottom, top):
    if any(t is b for t in top for b in bottom):
        layer.fail("does not allow in-place computation (give the top blob its own name)")


# ---------------------------------------------------------------------------------------------
@register("ArgMax")
class ArgMaxLayer(Layer):
    """Without ``axis`` the top is (N, 1, top_k) -- (N, 2, top_k) with out_max_val: indices in
    channel 0, values in channel 1 -- padded with trailing 1-axes to the bottom's axis count.
    With ``axis`` the top is the bottom's shape with that axis set to top_k, holding the
    values when out_max_val, else the indices."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.argmax_param
        self.out_max_val = bool(p.out_max_val)
        self.top_k = int(p.top_k)
        self.has_axis = p.HasField("axis")
        if self.top_k < 1:
            self.fail(f"top_k must not be less than 1, got {self.top_k}")

    def reshape(self, bottom, top):
        _check_not_in_place(self, bottom, top)
        b = bottom[0]
        if b.num_axes < 1:
            self.fail("needs a bottom with at least one axis")
        k = self.top_k
        if self.has_axis:
            axis_value = self.layer_param.argmax_param.axis
            try:
                axis = b.canonical_axis_index(axis_value)
            except IndexError:
                self.fail(f"axis {axis_value} is out of range for bottom shape {_fmt(b.shape)}")
            if k > b.shape[axis]:
                self.fail(f"top_k ({k}) must be less than or equal to the dimension of axis "
                          f"{axis} of bottom shape {_fmt(b.shape)}")
            self.axis = axis
            shape = list(b.shape)
            shape[axis] = k
        else:
            dim = b.count_range(1)
            if k > dim:
                self.fail(f"top_k ({k}) must be less than or equal to the number of values per "
                          f"item ({dim}) of bottom shape {_fmt(b.shape)}")
            self.axis = None
            shape = [1] * max(b.num_axes, 3)
            shape[0] = b.shape[0]
            shape[2] = k
            if self.out_max_val:
                shape[1] = 2
        top[0].reshape(tuple(shape))

    def _top_k(self, xp, v):
        """Indices and values of the top_k largest entries along the last axis of ``v``,
        in descending order; equal values: the larger index first."""
        dim = v.shape[-1]
        rev = v[..., ::-1]
        if self.top_k == 1:
            order = xp.argmax(rev, axis=-1)[..., None]
        else:
            order = xp.argsort(-rev, axis=-1, kind="stable")[..., :self.top_k]
        idx = (dim - 1) - order
        return idx, xp.take_along_axis(v, idx, axis=-1)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].xdata
        if self.has_axis:
            idx, vals = self._top_k(xp, xp.moveaxis(x, self.axis, -1))
            out = xp.moveaxis(top[0].xdata, self.axis, -1)
            out[...] = vals if self.out_max_val else idx
        else:
            n = x.shape[0]
            idx, vals = self._top_k(xp, x.reshape(n, -1))
            if self.out_max_val:
                out = top[0].xdata.reshape(n, 2, self.top_k)
                out[:, 0] = idx
                out[:, 1] = vals
            else:
                top[0].xdata.reshape(n, self.top_k)[...] = idx

    def allow_force_backward(self, bottom_index):
        return False

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            self.fail("has no backward pass (argmax is not differentiable)")


# ---------------------------------------------------------------------------------------------
@register("MVN")
class MVNLayer(Layer):
    """y = (x - mean) / (std + eps) over groups of H*W values (C*H*W with across_channels);
    without normalize_variance y = x - mean. Backward follows Caffe's formula
    dx = (dy - mean(dy) - y * mean(dy * y)) / (std + eps)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across_channels = bool(p.across_channels)
        self.eps = float(p.eps)

    def reshape(self, bottom, top):
        n, c, h, w = _legacy_dims(self, bottom[0])
        self.groups = n if self.across_channels else n * c
        self.dim = (c * h * w) if self.across_channels else h * w
        top[0].reshape((n, c, h, w))     # also for in place: Caffe's top is always 4-D

    def forward(self, bottom, top):
        xp = bottom[0].xp
        shape = (self.groups, self.dim)
        x = bottom[0].xdata.reshape(shape)
        y = top[0].xdata.reshape(shape)
        if self.dim == 0 or self.groups == 0:
            return
        mean = x.mean(axis=1, keepdims=True)
        xp.subtract(x, mean, out=y)
        if self.normalize_variance:
            var = (y * y).mean(axis=1, keepdims=True)
            std = xp.sqrt(var)
            std += self.eps
            y /= std
            self._std = std

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or self.dim == 0 or self.groups == 0:
            return
        xp = bottom[0].xp
        shape = (self.groups, self.dim)
        dy = top[0].xdiff.reshape(shape)
        dx = bottom[0].xdiff.reshape(shape)
        mean_dy = dy.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            y = top[0].xdata.reshape(shape)
            proj = (dy * y).mean(axis=1, keepdims=True)   # before dx (may be dy) is written
            xp.subtract(dy, mean_dy, out=dx)
            dx -= y * proj
            dx /= self._std
        else:
            xp.subtract(dy, mean_dy, out=dx)


# ---------------------------------------------------------------------------------------------
@register("Reduction")
class ReductionLayer(Layer):
    """Reduces all axes from ``axis`` to the end: SUM, ASUM (sum of |x|), SUMSQ (sum of x^2)
    or MEAN, then multiplies by ``coeff``. The top has the bottom's first ``axis`` axes
    (axis 0: a scalar, 0-axis top)."""
    exact_num_bottom = 1
    exact_num_top = 1
    _OPS = {ReductionOp.SUM: "SUM", ReductionOp.ASUM: "ASUM", ReductionOp.SUMSQ: "SUMSQ",
            ReductionOp.MEAN: "MEAN"}

    def layer_setup(self, bottom, top):
        p = self.layer_param.reduction_param
        self.op = p.operation
        if self.op not in self._OPS:
            self.fail(f"unknown reduction operation {self.op}")

    def reshape(self, bottom, top):
        _check_not_in_place(self, bottom, top)
        b = bottom[0]
        p = self.layer_param.reduction_param
        try:
            axis = b.canonical_axis_index(p.axis)
        except IndexError:
            self.fail(f"axis {p.axis} is out of range for bottom shape {_fmt(b.shape)}")
        self.axis = axis
        self.num = b.count_range(0, axis)
        self.dim = b.count_range(axis)
        top[0].reshape(tuple(b.shape[:axis]))
        self.coeff = float(p.coeff)
        if self.op == ReductionOp.MEAN:
            self.coeff /= self.dim if self.dim else 1

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].xdata.reshape(self.num, self.dim)
        y = top[0].xdata.reshape(self.num)
        if self.op == ReductionOp.ASUM:
            xp.abs(x).sum(axis=1, out=y)
        elif self.op == ReductionOp.SUMSQ:
            (x * x).sum(axis=1, out=y)
        else:  # SUM, MEAN
            x.sum(axis=1, out=y)
        if self.coeff != 1:
            y *= self.coeff

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dy = top[0].xdiff.reshape(self.num, 1)
        dx = bottom[0].xdiff.reshape(self.num, self.dim)
        scale = dy * self.coeff
        if self.op == ReductionOp.ASUM:
            x = bottom[0].xdata.reshape(self.num, self.dim)
            xp.multiply(xp.sign(x), scale, out=dx)
        elif self.op == ReductionOp.SUMSQ:
            x = bottom[0].xdata.reshape(self.num, self.dim)
            xp.multiply(x, 2 * scale, out=dx)
        else:
            dx[...] = scale


# ---------------------------------------------------------------------------------------------
@register("Embed")
class EmbedLayer(Layer):
    """top = W[index] (+ b) for every value of the bottom, read as an integer index in
    [0, input_dim); top shape = bottom shape + (num_output,). W is (input_dim, num_output)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.embed_param
        self.num_output = int(p.num_output)
        self.input_dim = int(p.input_dim)
        if self.num_output <= 0:
            self.fail("embed_param.num_output must be positive")
        if self.input_dim <= 0:
            self.fail("embed_param.input_dim must be positive")
        self.bias_term = bool(p.bias_term)
        specs = [((self.input_dim, self.num_output), p.weight_filler)]
        if self.bias_term:
            specs.append(((self.num_output,), p.bias_filler))
        init_param_blobs(self, specs)

    def reshape(self, bottom, top):
        _check_not_in_place(self, bottom, top)
        self.m = bottom[0].count
        top[0].reshape(tuple(bottom[0].shape) + (self.num_output,))

    def _indices(self, bottom):
        xp = bottom[0].xp
        x = bottom[0].xdata.reshape(-1)
        idx = x.astype(np.int64)              # truncation, as Caffe's static_cast<int>
        if self.m:
            bad = (idx < 0) | (idx >= self.input_dim)
            if bool(bad.any()):
                first = float(x[int(xp.argmax(bad))])
                self.fail(f"index {first:g} in the bottom is out of range [0, "
                          f"{self.input_dim - 1}] (input_dim {self.input_dim})")
            frac = idx != x
            if bool(frac.any()):
                first = float(x[int(xp.argmax(frac))])
                self.fail(f"bottom value {first:g} is not an integer index")
        return idx

    def forward(self, bottom, top):
        xp = bottom[0].xp
        idx = self._indices(bottom)
        self._idx = idx
        y = top[0].xdata.reshape(self.m, self.num_output)
        xp.take(self.blobs[0].xdata, idx, axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].xdata

    def allow_force_backward(self, bottom_index):
        return False

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.fail("cannot backpropagate to its input (the bottom holds indices)")
        xp = bottom[0].xp
        dy = top[0].xdiff.reshape(self.m, self.num_output)
        if self.param_propagate_down[0]:
            _scatter_add_rows(xp, self.blobs[0].xdiff, self._indices(bottom), dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].xdiff[...] += dy.sum(axis=0)


# ---------------------------------------------------------------------------------------------
@register("Parameter")
class ParameterLayer(Layer):
    """No bottom; one parameter blob of parameter_param.shape (zeros unless weights are
    loaded); the top is a view of its data. Backward accumulates the top's diff into the
    parameter's diff."""
    exact_num_bottom = 0
    exact_num_top = 1

    def _shape(self):
        return tuple(int(d) for d in self.layer_param.parameter_param.shape.dim)

    def layer_setup(self, bottom, top):
        if not self.blobs:
            self.blobs = [self.make_param_blob(self._shape(), caffe_pb2.FillerParameter())]

    def reshape(self, bottom, top):
        shape = self._shape()
        if self.blobs[0].count != int(np.prod(shape, dtype=np.int64)):
            self.fail(f"parameter blob shape {_fmt(self.blobs[0].shape)} does not match "
                      f"parameter_param.shape {_fmt(shape)}", ShapeError)
        top[0].reshape(shape)
        top[0].share_data(self.blobs[0])

    def forward(self, bottom, top):
        # Shared every pass: the net (weight sharing, copying weights) may replace the blob.
        top[0].share_data(self.blobs[0])

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down and self.param_propagate_down[0]:
            p = self.blobs[0]
            p.xdiff[...] += top[0].xdiff.reshape(p.shape)


# ---------------------------------------------------------------------------------------------
@register("BatchReindex")
class BatchReindexLayer(Layer):
    """top[i] = bottom0[int(bottom1[i])]; bottom 1 is a 1-D blob of indices into bottom 0's
    first axis. Gradient only to bottom 0 (rows picked several times accumulate)."""
    exact_num_bottom = 2
    exact_num_top = 1

    def reshape(self, bottom, top):
        _check_not_in_place(self, bottom, top)
        data, index = bottom
        if index.num_axes != 1:
            self.fail(f"the index bottom must be 1-D, got shape {_fmt(index.shape)}", ShapeError)
        if data.num_axes < 1:
            self.fail("the data bottom needs at least one axis", ShapeError)
        top[0].reshape((index.shape[0],) + tuple(data.shape[1:]))

    def _indices(self, bottom):
        xp = bottom[1].xp
        r = bottom[1].xdata
        n = bottom[0].shape[0]
        bad = (r < 0) | (r >= n)
        if r.size and bool(bad.any()):
            first = float(r[int(xp.argmax(bad))])
            self.fail(f"index {first:g} is out of range for a batch of {n} "
                      f"(bottom shape {_fmt(bottom[0].shape)})")
        return r.astype(np.int64)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        idx = self._indices(bottom)
        k = idx.shape[0]
        if top[0].count == 0:
            return
        x = bottom[0].xdata.reshape(bottom[0].shape[0], -1)
        xp.take(x, idx, axis=0, out=top[0].xdata.reshape(k, -1))

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            self.fail("cannot backpropagate to the index bottom")
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        n = bottom[0].shape[0]
        dx = bottom[0].xdiff.reshape(n, -1) if n else bottom[0].xdiff
        dx[...] = 0
        if top[0].count == 0:
            return
        idx = self._indices(bottom)
        _scatter_add_rows(xp, dx, idx, top[0].xdiff.reshape(idx.shape[0], -1))
