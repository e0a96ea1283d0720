"""Layers that move, join, cut or re-view blobs without learned parameters.

Split, Concat, Slice, Eltwise, Flatten, Reshape, Silence, Tile and Crop, with Caffe's
parameters and semantics. Split/Flatten/Reshape (and Concat/Slice with a single blob) give
tops that are views of the bottom's data (Blob.share_data), so their forward copies nothing.
"""
from .. import backend
from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2

EltwiseOp = caffe_pb2.EltwiseParameter


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


def _fmt(shape):
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


class _StructLayer(Layer):
    def _canonical(self, blob, axis, what="axis"):
        try:
            return blob.canonical_axis_index(int(axis))
        except IndexError:
            self.fail(f"{what} {axis} is out of range for a {blob.num_axes}-axis bottom blob "
                      f"of shape {_fmt(blob.shape)}")

    def _no_in_place(self, bottom, top):
        for t in top:
            if any(t is b for b in bottom):
                self.fail("does not allow in-place computation (give the top blob its own name)")


# ---------------------------------------------------------------------------------------------
@register("Split")
class SplitLayer(_StructLayer):
    """One bottom, n tops that are views of its data; backward sums the tops' diffs."""
    exact_num_bottom = 1
    min_num_top = 1

    def reshape(self, bottom, top):
        self._no_in_place(bottom, top)
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
@register("Concat")
class ConcatLayer(_StructLayer):
    min_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            self.fail("give either concat_param.axis or concat_param.concat_dim, not both")

    def _axis(self, bottom):
        p = self.layer_param.concat_param
        if p.HasField("concat_dim"):
            if p.concat_dim >= bottom[0].num_axes:
                self.fail(f"concat_dim {p.concat_dim} is out of range for bottom shape "
                          f"{_fmt(bottom[0].shape)}")
            return int(p.concat_dim)
        return self._canonical(bottom[0], p.axis)

    def reshape(self, bottom, top):
        self._no_in_place(bottom, top)
        axis = self._axis(bottom)
        s0 = tuple(bottom[0].shape)
        total = 0
        for i, b in enumerate(bottom):
            s = tuple(b.shape)
            if len(s) != len(s0) or s[:axis] != s0[:axis] or s[axis + 1:] != s0[axis + 1:]:
                self.fail(f"all bottoms must have the same shape except along the concat axis "
                          f"{axis}: bottom 0 has shape {_fmt(s0)}, bottom {i} has shape "
                          f"{_fmt(s)}", ShapeError)
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
class SliceLayer(_StructLayer):
    exact_num_bottom = 1
    min_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.slice_param
        if p.HasField("axis") and p.HasField("slice_dim"):
            self.fail("give either slice_param.axis or slice_param.slice_dim, not both")
        self.slice_point = [int(v) for v in p.slice_point]
        if self.slice_point and len(self.slice_point) != len(top) - 1:
            self.fail(f"{len(self.slice_point)} slice_point values given for {len(top)} tops "
                      f"(need one fewer than the number of tops)")

    def reshape(self, bottom, top):
        self._no_in_place(bottom, top)
        p = self.layer_param.slice_param
        b = bottom[0]
        if p.HasField("slice_dim"):
            if p.slice_dim >= b.num_axes:
                self.fail(f"slice_dim {p.slice_dim} is out of range for bottom shape "
                          f"{_fmt(b.shape)}")
            axis = int(p.slice_dim)
        else:
            axis = self._canonical(b, p.axis)
        dim = b.shape[axis]
        n = len(top)
        if self.slice_point:
            if n > dim:
                self.fail(f"cannot cut axis {axis} of size {dim} (bottom shape {_fmt(b.shape)}) "
                          f"into {n} tops")
            sizes, prev = [], 0
            for pt in self.slice_point:
                if pt <= prev:
                    self.fail(f"slice_point values must be positive and strictly increasing, "
                              f"got {self.slice_point}")
                sizes.append(pt - prev)
                prev = pt
            if prev > dim:
                self.fail(f"slice_point {prev} is beyond the size {dim} of axis {axis} "
                          f"(bottom shape {_fmt(b.shape)})", ShapeError)
            sizes.append(dim - prev)
        else:
            if dim % n:
                self.fail(f"the number of tops ({n}) must evenly divide the size {dim} of "
                          f"slice axis {axis} (bottom shape {_fmt(b.shape)})", ShapeError)
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
@register("Eltwise")
class EltwiseLayer(_StructLayer):
    """Element-wise PROD, SUM (with one coefficient per bottom) or MAX of the bottoms."""
    min_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        self.op = p.operation
        if len(p.coeff) not in (0, len(bottom)):
            self.fail(f"eltwise_param has {len(p.coeff)} coeff values for {len(bottom)} bottoms "
                      f"(give one per bottom blob, or none)")
        if self.op == EltwiseOp.PROD and len(p.coeff):
            self.fail("coefficients (coeff) are only allowed for operation SUM")
        if self.op not in (EltwiseOp.PROD, EltwiseOp.SUM, EltwiseOp.MAX):
            self.fail(f"unknown eltwise operation {self.op}")
        self.coeffs = [float(c) for c in p.coeff] or [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad
        self.max_idx = None

    def reshape(self, bottom, top):
        s0 = tuple(bottom[0].shape)
        for i, b in enumerate(bottom[1:], 1):
            if tuple(b.shape) != s0:
                self.fail(f"all bottoms must have the same shape: bottom 0 has shape {_fmt(s0)}, "
                          f"bottom {i} has shape {_fmt(b.shape)}", ShapeError)
        top[0].reshape(s0)
        if self.op == EltwiseOp.MAX:
            xp = self.xp_of(bottom[0])
            if self.max_idx is None or self.max_idx.shape != s0 or \
                    backend.get_array_module(self.max_idx) is not xp:
                self.max_idx = xp.empty(s0, dtype=xp.int32)

    def forward(self, bottom, top):
        xp = self.xp_of(bottom[0])
        out = top[0].xdata
        if self.op == EltwiseOp.PROD:
            xp.multiply(bottom[0].xdata, bottom[1].xdata, out=out)
            for b in bottom[2:]:
                out *= b.xdata
        elif self.op == EltwiseOp.SUM:
            c = self.coeffs
            if c[0] == 1.0:
                if out is not bottom[0].xdata:
                    out[...] = bottom[0].xdata
            else:
                xp.multiply(bottom[0].xdata, c[0], out=out)
            for ci, b in zip(c[1:], bottom[1:]):
                if ci == 1.0:
                    out += b.xdata
                else:
                    out += ci * b.xdata
        else:
            # Caffe's rule: between bottoms 0 and 1 a tie goes to bottom 1; a later bottom wins
            # only where it is strictly greater than the running maximum.
            mask = self.max_idx
            a, b = bottom[0].xdata, bottom[1].xdata
            first = a > b
            mask[...] = 1
            mask[first] = 0
            xp.copyto(out, xp.where(first, a, b))
            for i, bl in enumerate(bottom[2:], 2):
                gt = bl.xdata > out
                xp.copyto(out, bl.xdata, where=gt)
                mask[gt] = i

    def backward(self, top, propagate_down, bottom):
        xp = self.xp_of(top[0])
        tdiff = top[0].xdiff
        tdata = top[0].xdata
        for i, (b, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            bd = b.xdiff
            if self.op == EltwiseOp.PROD:
                if self.stable_prod_grad:
                    others = [o for j, o in enumerate(bottom) if j != i]
                    bd[...] = others[0].xdata
                    for o in others[1:]:
                        bd *= o.xdata
                else:
                    xp.divide(tdata, b.xdata, out=bd)
                bd *= tdiff
            elif self.op == EltwiseOp.SUM:
                if self.coeffs[i] == 1.0:
                    bd[...] = tdiff
                else:
                    xp.multiply(tdiff, self.coeffs[i], out=bd)
            else:
                xp.multiply(tdiff, self.max_idx == i, out=bd)


# ---------------------------------------------------------------------------------------------
@register("Flatten")
class FlattenLayer(_StructLayer):
    """Collapse axes [axis, end_axis] into one; the top views the bottom's data and diff."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self._no_in_place(bottom, top)

    def reshape(self, bottom, top):
        self._no_in_place(bottom, top)
        p = self.layer_param.flatten_param
        b = bottom[0]
        start = self._canonical(b, p.axis, "flatten_param.axis")
        end = self._canonical(b, p.end_axis, "flatten_param.end_axis")
        s = tuple(b.shape)
        shape = s[:start] + (b.count_range(start, end + 1),) + s[end + 1:]
        _share_view(top[0], b, shape, diff=True)

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _copy_diff_if_not_shared(top[0], bottom[0])


# ---------------------------------------------------------------------------------------------
@register("Reshape")
class ReshapeLayer(_StructLayer):
    """New shape for the same data: 0 copies a bottom dim, -1 is inferred; axis/num_axes pick
    the range of bottom axes replaced. The top views the bottom's data and diff."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self._no_in_place(bottom, top)
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
        self._no_in_place(bottom, top)
        p = self.layer_param.reshape_param
        b = bottom[0]
        nax = b.num_axes
        start = p.axis if p.axis >= 0 else nax + p.axis + 1
        if not 0 <= start <= nax:
            self.fail(f"reshape_param.axis {p.axis} is out of range for a {nax}-axis bottom of "
                      f"shape {_fmt(b.shape)}")
        end = nax if p.num_axes == -1 else start + p.num_axes
        if end > nax:
            self.fail(f"reshape_param.axis + num_axes = {end} is out of range for a {nax}-axis "
                      f"bottom of shape {_fmt(b.shape)}")
        s = tuple(b.shape)
        shape = list(s[:start]) + list(self.new_dims) + list(s[end:])
        for i in self.copy_axes:
            if start + i >= nax:
                self.fail(f"reshape_param.shape {self.new_dims} has a 0 at position {i} but the "
                          f"bottom of shape {_fmt(s)} has no axis {start + i} to copy")
            shape[start + i] = s[start + i]
        if self.inferred_axis >= 0:
            explicit = self.constant_count * b.count_range(0, start) * b.count_range(end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            if explicit == 0 or b.count % explicit:
                self.fail(f"bottom count {b.count} (shape {_fmt(s)}) is not divisible by the "
                          f"product {explicit} of the given dimensions {self.new_dims}",
                          ShapeError)
            shape[start + self.inferred_axis] = b.count // explicit
        count = 1
        for d in shape:
            count *= d
        if count != b.count:
            self.fail(f"output shape {_fmt(shape)} (count {count}) does not match the bottom "
                      f"shape {_fmt(s)} (count {b.count})", ShapeError)
        _share_view(top[0], b, tuple(shape), diff=True)

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _copy_diff_if_not_shared(top[0], bottom[0])


# ---------------------------------------------------------------------------------------------
@register("Silence")
class SilenceLayer(_StructLayer):
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


# ---------------------------------------------------------------------------------------------
@register("Tile")
class TileLayer(_StructLayer):
    """Repeat the bottom ``tiles`` times along ``axis`` (whole blocks, like numpy.tile)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self._no_in_place(bottom, top)
        p = self.layer_param.tile_param
        if not p.HasField("tiles"):
            self.fail("tile_param.tiles must be specified")
        if p.tiles <= 0:
            self.fail(f"tile_param.tiles must be positive, got {p.tiles}")
        self.tiles = int(p.tiles)

    def reshape(self, bottom, top):
        b = bottom[0]
        axis = self._canonical(b, self.layer_param.tile_param.axis, "tile_param.axis")
        s = tuple(b.shape)
        self.outer = b.count_range(0, axis)
        self.inner = b.count_range(axis)
        top[0].reshape(s[:axis] + (s[axis] * self.tiles,) + s[axis + 1:])

    def forward(self, bottom, top):
        t = top[0].xdata.reshape(self.outer, self.tiles, self.inner)
        t[...] = bottom[0].xdata.reshape(self.outer, 1, self.inner)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp_of(bottom[0])
        td = top[0].xdiff.reshape(self.outer, self.tiles, self.inner)
        xp.sum(td, axis=1, out=bottom[0].xdiff.reshape(self.outer, self.inner))


# ---------------------------------------------------------------------------------------------
@register("Crop")
class CropLayer(_StructLayer):
    """Crop bottom 0 to the shape of bottom 1 on the axes from ``axis`` on, at ``offset``."""
    exact_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.crop_param
        start = self._canonical(bottom[0], p.axis, "crop_param.axis")
        if len(p.offset) > 1 and start + len(p.offset) != bottom[0].num_axes:
            self.fail(f"crop_param gives {len(p.offset)} offsets but {bottom[0].num_axes - start} "
                      f"axes (from axis {start} of bottom shape {_fmt(bottom[0].shape)}) are "
                      f"cropped; give one offset per cropped axis, or a single one")

    def reshape(self, bottom, top):
        p = self.layer_param.crop_param
        b0, b1 = bottom
        nax = b0.num_axes
        start = self._canonical(b0, p.axis, "crop_param.axis")
        if b1.num_axes < nax:
            self.fail(f"the reference bottom 1 of shape {_fmt(b1.shape)} has fewer axes than "
                      f"bottom 0 of shape {_fmt(b0.shape)}", ShapeError)
        shape, index = [], []
        for i in range(nax):
            off, size = 0, b0.shape[i]
            if i >= start:
                size = b1.shape[i]
                if len(p.offset) == 1:
                    off = int(p.offset[0])
                elif len(p.offset) > 1:
                    off = int(p.offset[i - start])
                if b0.shape[i] - off < size:
                    self.fail(f"the crop of axis {i} is out of bounds: size {size} at offset "
                              f"{off} does not fit bottom 0 of shape {_fmt(b0.shape)} "
                              f"(bottom 1 has shape {_fmt(b1.shape)})", ShapeError)
            shape.append(size)
            index.append(slice(off, off + size))
        self.index = tuple(index)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].xdata[...] = bottom[0].xdata[self.index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bd = bottom[0].xdiff
            bd[...] = 0
            bd[self.index] = top[0].xdiff
