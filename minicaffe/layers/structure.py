"""Layers that move, join, cut or re-view blobs without learned parameters: Split, Concat,
Slice, Flatten, Reshape and Silence, with Caffe's parameters and semantics.

Split/Flatten/Reshape (and Concat/Slice with a single blob) give tops that are views of the
bottom's data (Blob.share_data), so their forward copies nothing.
"""
from ..errors import ShapeError
from ..layer import Layer, register, shape_text


def _axis_slice(axis, start, stop):
    """An index selecting [start:stop] along ``axis`` and everything along the other axes."""
    return (slice(None),) * axis + (slice(start, stop),)


def _share_view(top, bottom, shape, diff):
    """Make ``top`` a ``shape``-shaped view of ``bottom``'s data (and diff if ``diff``)."""
    if tuple(top.shape) != tuple(shape):
        top.reshape(shape)
    top.share_data(bottom)
    if diff:
        bottom.xdiff  # allocate first so both blobs agree on the buffer
        top.share_diff(bottom)


def _copy_diff_if_not_shared(top, bottom):
    """Views share their diff with the bottom; copy only if someone broke the sharing."""
    xp = Layer.xp_of(bottom)
    bd, td = bottom.xdiff, top.xdiff
    if not xp.may_share_memory(bd, td):
        bd[...] = td.reshape(bd.shape)


class _ViewLayer(Layer):
    """One top that views the bottom's data and diff: nothing to compute either way."""
    exact_num_bottom = 1
    exact_num_top = 1

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _copy_diff_if_not_shared(top[0], bottom[0])


# ---------------------------------------------------------------------------------------------
@register("Split")
class SplitLayer(Layer):
    """One bottom, n tops that are views of its data; backward sums the tops' diffs."""
    exact_num_bottom = 1
    min_num_top = 1

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        for t in top:
            _share_view(t, bottom[0], bottom[0].shape, diff=False)

    def forward(self, bottom, top):
        pass  # the tops already view the bottom's data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        bd = bottom[0].xdiff
        if len(top) == 1:
            bd[...] = top[0].xdiff
            return
        xp = self.xp_of(bottom[0])
        xp.add(top[0].xdiff, top[1].xdiff, out=bd)
        for t in top[2:]:
            bd += t.xdiff


# ---------------------------------------------------------------------------------------------
class _AlongAxisLayer(Layer):
    """Concat and Slice: their axis is ``axis`` or the legacy ``concat_dim``/``slice_dim``."""
    _param = ""         # "concat_param" or "slice_param"
    _legacy = ""        # "concat_dim" or "slice_dim"

    def layer_setup(self, bottom, top):
        p = getattr(self.layer_param, self._param)
        if p.HasField("axis") and p.HasField(self._legacy):
            self.fail(f"give either {self._param}.axis or {self._param}.{self._legacy}, not both")

    def _axis(self, blob):
        p = getattr(self.layer_param, self._param)
        if p.HasField(self._legacy):
            dim = getattr(p, self._legacy)
            if dim >= blob.num_axes:
                self.fail(f"{self._legacy} {dim} is out of range for bottom shape "
                          f"{shape_text(blob.shape)}")
            return int(dim)
        return self.canonical_axis(blob, p.axis)


@register("Concat")
class ConcatLayer(_AlongAxisLayer):
    min_num_bottom = 1
    exact_num_top = 1
    _param, _legacy = "concat_param", "concat_dim"

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        axis = self._axis(bottom[0])
        s0 = tuple(bottom[0].shape)
        total = 0
        for i, b in enumerate(bottom):
            s = tuple(b.shape)
            if len(s) != len(s0) or s[:axis] != s0[:axis] or s[axis + 1:] != s0[axis + 1:]:
                self.fail(f"all bottoms must have the same shape except along the concat axis "
                          f"{axis}: bottom 0 has shape {shape_text(s0)}, bottom {i} has shape "
                          f"{shape_text(s)}", ShapeError)
            total += s[axis]
        self.axis = axis
        shape = s0[:axis] + (total,) + s0[axis + 1:]
        if len(bottom) == 1:
            _share_view(top[0], bottom[0], shape, diff=True)
        else:
            top[0].reshape(shape)

    def forward(self, bottom, top):
        if len(bottom) == 1:
            return
        td = top[0].xdata
        off = 0
        for b in bottom:
            n = b.shape[self.axis]
            td[_axis_slice(self.axis, off, off + n)] = b.xdata
            off += n

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            if propagate_down[0]:
                _copy_diff_if_not_shared(top[0], bottom[0])
            return
        tdiff = top[0].xdiff
        off = 0
        for b, down in zip(bottom, propagate_down):
            n = b.shape[self.axis]
            if down:
                b.xdiff[...] = tdiff[_axis_slice(self.axis, off, off + n)]
            off += n


# ---------------------------------------------------------------------------------------------
@register("Slice")
class SliceLayer(_AlongAxisLayer):
    exact_num_bottom = 1
    min_num_top = 1
    _param, _legacy = "slice_param", "slice_dim"

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        p = self.layer_param.slice_param
        self.slice_point = [int(v) for v in p.slice_point]
        if self.slice_point and len(self.slice_point) != len(top) - 1:
            self.fail(f"{len(self.slice_point)} slice_point values given for {len(top)} tops "
                      f"(need one fewer than the number of tops)")

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        b = bottom[0]
        axis = self._axis(b)
        dim = b.shape[axis]
        n = len(top)
        if self.slice_point:
            if n > dim:
                self.fail(f"cannot cut axis {axis} of size {dim} (bottom shape "
                          f"{shape_text(b.shape)}) into {n} tops")
            sizes, prev = [], 0
            for pt in self.slice_point:
                if pt <= prev:
                    self.fail(f"slice_point values must be positive and strictly increasing, "
                              f"got {self.slice_point}")
                sizes.append(pt - prev)
                prev = pt
            if prev > dim:
                self.fail(f"slice_point {prev} is beyond the size {dim} of axis {axis} "
                          f"(bottom shape {shape_text(b.shape)})", ShapeError)
            sizes.append(dim - prev)
        else:
            if dim % n:
                self.fail(f"the number of tops ({n}) must evenly divide the size {dim} of "
                          f"slice axis {axis} (bottom shape {shape_text(b.shape)})", ShapeError)
            sizes = [dim // n] * n
        self.axis, self.sizes = axis, sizes
        s = tuple(b.shape)
        if n == 1:
            _share_view(top[0], b, s, diff=True)
            return
        for t, size in zip(top, sizes):
            t.reshape(s[:axis] + (size,) + s[axis + 1:])

    def forward(self, bottom, top):
        if len(top) == 1:
            return
        bd = bottom[0].xdata
        off = 0
        for t, n in zip(top, self.sizes):
            t.xdata[...] = bd[_axis_slice(self.axis, off, off + n)]
            off += n

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if len(top) == 1:
            _copy_diff_if_not_shared(top[0], bottom[0])
            return
        bdiff = bottom[0].xdiff
        off = 0
        for t, n in zip(top, self.sizes):
            bdiff[_axis_slice(self.axis, off, off + n)] = t.xdiff
            off += n


# ---------------------------------------------------------------------------------------------
@register("Flatten")
class FlattenLayer(_ViewLayer):
    """Collapse axes [axis, end_axis] into one; the top views the bottom's data and diff."""

    def layer_setup(self, bottom, top):
        self.refuse_in_place(bottom, top)

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        p = self.layer_param.flatten_param
        b = bottom[0]
        start = self.canonical_axis(b, p.axis, "flatten_param.axis")
        end = self.canonical_axis(b, p.end_axis, "flatten_param.end_axis")
        s = tuple(b.shape)
        shape = s[:start] + (b.count_range(start, end + 1),) + s[end + 1:]
        _share_view(top[0], b, shape, diff=True)


# ---------------------------------------------------------------------------------------------
@register("Reshape")
class ReshapeLayer(_ViewLayer):
    """New shape for the same data: 0 copies a bottom dim, -1 is inferred; axis/num_axes pick
    the range of bottom axes replaced. The top views the bottom's data and diff."""

    def layer_setup(self, bottom, top):
        self.refuse_in_place(bottom, top)
        p = self.layer_param.reshape_param
        self.new_dims = [int(d) for d in p.shape.dim]
        self.copy_axes = [i for i, d in enumerate(self.new_dims) if d == 0]
        inferred = [i for i, d in enumerate(self.new_dims) if d == -1]
        if len(inferred) > 1:
            self.fail(f"reshape_param.shape {self.new_dims} has more than one -1 dimension; "
                      f"at most one can be inferred")
        bad = [d for d in self.new_dims if d < -1]
        if bad:
            self.fail(f"reshape_param.shape {self.new_dims} has a negative dimension other "
                      f"than -1")
        self.inferred_axis = inferred[0] if inferred else -1
        self.constant_count = 1
        for d in self.new_dims:
            if d > 0:
                self.constant_count *= d
        if p.num_axes < -1:
            self.fail(f"reshape_param.num_axes must be >= 0, or -1 for all, got {p.num_axes}")

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        p = self.layer_param.reshape_param
        b = bottom[0]
        nax = b.num_axes
        start = p.axis if p.axis >= 0 else nax + p.axis + 1
        if not 0 <= start <= nax:
            self.fail(f"reshape_param.axis {p.axis} is out of range for a {nax}-axis bottom of "
                      f"shape {shape_text(b.shape)}")
        end = nax if p.num_axes == -1 else start + p.num_axes
        if end > nax:
            self.fail(f"reshape_param.axis + num_axes = {end} is out of range for a {nax}-axis "
                      f"bottom of shape {shape_text(b.shape)}")
        s = tuple(b.shape)
        shape = list(s[:start]) + list(self.new_dims) + list(s[end:])
        for i in self.copy_axes:
            if start + i >= nax:
                self.fail(f"reshape_param.shape {self.new_dims} has a 0 at position {i} but the "
                          f"bottom of shape {shape_text(s)} has no axis {start + i} to copy")
            shape[start + i] = s[start + i]
        if self.inferred_axis >= 0:
            explicit = self.constant_count * b.count_range(0, start) * b.count_range(end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            if explicit == 0 or b.count % explicit:
                self.fail(f"bottom count {b.count} (shape {shape_text(s)}) is not divisible by the "
                          f"product {explicit} of the given dimensions {self.new_dims}",
                          ShapeError)
            shape[start + self.inferred_axis] = b.count // explicit
        count = 1
        for d in shape:
            count *= d
        if count != b.count:
            self.fail(f"output shape {shape_text(shape)} (count {count}) does not match the bottom "
                      f"shape {shape_text(s)} (count {b.count})", ShapeError)
        _share_view(top[0], b, tuple(shape), diff=True)


# ---------------------------------------------------------------------------------------------
@register("Silence")
class SilenceLayer(Layer):
    """Swallows its bottoms (so they are not reported as net outputs); backward writes zeros."""
    min_num_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, down in zip(bottom, propagate_down):
            if down:
                b.xdiff[...] = 0
