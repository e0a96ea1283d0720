"""Reduction and ArgMax: layers that reduce the values of each item, with BVLC Caffe's
parameters, defaults and output-shape rules.

* Reduction (reduction_param): SUM / ASUM / SUMSQ / MEAN over every axis from ``axis`` on,
  times ``coeff``; the top keeps the axes before ``axis``.
* ArgMax (argmax_param): indices (and optionally values) of the top_k largest entries, per item
  over all of an item's values, or along ``axis``. No backward. Ties go to the larger index, as
  Caffe's sort of (value, index) pairs in descending order does.
"""
from ..layer import Layer, register, shape_text
from ..proto import caffe_pb2

ReductionOp = caffe_pb2.ReductionParameter


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
        self.refuse_in_place(bottom, top)
        b = bottom[0]
        p = self.layer_param.reduction_param
        try:
            axis = b.canonical_axis_index(p.axis)
        except IndexError:
            self.fail(f"axis {p.axis} is out of range for bottom shape {shape_text(b.shape)}")
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
        self.refuse_in_place(bottom, top)
        b = bottom[0]
        if b.num_axes < 1:
            self.fail("needs a bottom with at least one axis")
        k = self.top_k
        if self.has_axis:
            axis_value = self.layer_param.argmax_param.axis
            try:
                axis = b.canonical_axis_index(axis_value)
            except IndexError:
                self.fail(f"axis {axis_value} is out of range for bottom shape "
                          f"{shape_text(b.shape)}")
            if k > b.shape[axis]:
                self.fail(f"top_k ({k}) must be less than or equal to the dimension of axis "
                          f"{axis} of bottom shape {shape_text(b.shape)}")
            self.axis = axis
            shape = list(b.shape)
            shape[axis] = k
        else:
            dim = b.count_range(1)
            if k > dim:
                self.fail(f"top_k ({k}) must be less than or equal to the number of values per "
                          f"item ({dim}) of bottom shape {shape_text(b.shape)}")
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
            # count(1), not -1: a batch of 0 has no size to infer the row length from
            idx, vals = self._top_k(xp, x.reshape(n, bottom[0].count_range(1)))
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
