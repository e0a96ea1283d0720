"""Convolution and Deconvolution (convolution_param), 2-D spatial case.

In "convolution sense" an image ``a`` (N, Ci, Hi, Wi) and a response ``r`` (N, Co, Ho, Wo)
are related through the weights W (Co, Ci/G, kh, kw), group by group:

    r[g] = W[g] @ im2col(a)[g]                      (one GEMM over the whole batch per group)
    dW[g] += dr[g] @ im2col(a)[g]^T
    da = col2im(W[g]^T @ dr[g])

Convolution: a = bottom, r = top.   Deconvolution: a = top, r = bottom (the same weights
used the other way round, as in Caffe). The matrices use the layout of ``minicaffe.im2col``:
columns (Ci*kh*kw, N*Lo) and responses as rows (Co, N*Lo).
"""
from .. import im2col as cols
from ..errors import ShapeError
from ..layer import Layer, register


def init_param_blobs(layer, specs):
    """Create the parameter blobs from ``specs`` [(shape, filler), ...], or, when the layer
    already holds blobs (weights given with the layer), check their number and shapes."""
    if layer.blobs:
        if len(layer.blobs) != len(specs):
            layer.fail(f"has {len(layer.blobs)} parameter blobs, expected {len(specs)}")
        for k, (b, (shape, _)) in enumerate(zip(layer.blobs, specs)):
            if tuple(b.shape) != tuple(shape):
                layer.fail(f"parameter blob {k} has shape {tuple(b.shape)}, expected "
                           f"{tuple(shape)}", ShapeError)
        return
    layer.blobs = [layer.make_param_blob(shape, filler) for shape, filler in specs]


def _pair(layer, p, name, default, h_field=None, w_field=None):
    """A (h, w) setting from a repeated field (given once or once per spatial axis) or from the
    explicit ``*_h``/``*_w`` fields (Caffe's rules)."""
    values = list(getattr(p, name))
    if h_field and (p.HasField(h_field) or p.HasField(w_field)):
        if values:
            layer.fail(f"either {name} or {h_field}/{w_field} should be specified; not both")
        return int(getattr(p, h_field)), int(getattr(p, w_field))
    if not values:
        if default is None:
            layer.fail(f"{name} (or {h_field} and {w_field}) is required")
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    layer.fail(f"{name} must be specified once, or once per spatial dimension "
               f"(given {len(values)} times for 2 spatial dimensions)")


class _ConvolutionBase(Layer):
    min_num_bottom = 1
    min_num_top = 1
    equal_num_bottom_top = True
    reverse = False   # Deconvolution: the top plays the convolution's input

    # -- setup -------------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        p = self.layer_param.convolution_param
        try:
            self.axis = bottom[0].canonical_axis_index(p.axis)
        except IndexError:
            self.fail(f"axis {p.axis} is out of range for bottom shape {tuple(bottom[0].shape)}")
        self.num_spatial = bottom[0].num_axes - self.axis - 1
        if self.num_spatial != 2:
            self.fail(f"only 2-D spatial input (..., C, H, W from axis {p.axis}) is supported; "
                      f"bottom shape {tuple(bottom[0].shape)} has {self.num_spatial} spatial axes")
        self.kernel = _pair(self, p, "kernel_size", None, "kernel_h", "kernel_w")
        self.stride = _pair(self, p, "stride", 1, "stride_h", "stride_w")
        self.pad = _pair(self, p, "pad", 0, "pad_h", "pad_w")
        self.dilation = _pair(self, p, "dilation", 1)
        if min(self.kernel) <= 0:
            self.fail(f"filter dimensions must be nonzero, got kernel {self.kernel}")
        if min(self.stride) <= 0:
            self.fail(f"stride must be positive, got {self.stride}")
        if min(self.dilation) <= 0:
            self.fail(f"dilation must be positive, got {self.dilation}")
        self.channels = bottom[0].shape[self.axis]
        self.num_output = int(p.num_output)
        self.group = int(p.group)
        if self.num_output <= 0:
            self.fail("num_output must be positive")
        if self.group <= 0:
            self.fail("group must be positive")
        if self.channels % self.group:
            self.fail(f"the number of input channels ({self.channels}) must be a multiple of "
                      f"group ({self.group})")
        if self.num_output % self.group:
            self.fail(f"num_output ({self.num_output}) must be a multiple of group ({self.group})")
        if self.reverse:
            self.conv_in, self.conv_out = self.num_output, self.channels
        else:
            self.conv_in, self.conv_out = self.channels, self.num_output
        self.bias_term = p.bias_term
        weight_shape = (self.conv_out, self.conv_in // self.group) + self.kernel
        specs = [(weight_shape, p.weight_filler)]
        if self.bias_term:
            specs.append(((self.num_output,), p.bias_filler))
        init_param_blobs(self, specs)
        self._col = cols.Scratch()       # im2col columns (conv_in*kh*kw, N*Lo)
        self._rows = cols.Scratch()      # responses as rows (conv_out, N*Lo)
        self._padded = cols.Scratch()    # zero-bordered copy of the image for im2col
        self._cached = None              # which bottom index the columns/rows buffer holds

    def reshape(self, bottom, top):
        first = bottom[0]
        if first.num_axes != self.axis + 3:
            self.fail(f"bottom num_axes may not change: got shape {tuple(first.shape)}", ShapeError)
        for i, b in enumerate(bottom[1:], 1):
            if tuple(b.shape) != tuple(first.shape):
                self.fail(f"all bottoms must have the same shape: bottom 0 is "
                          f"{tuple(first.shape)}, bottom {i} is {tuple(b.shape)}", ShapeError)
        for i, (b, t) in enumerate(zip(bottom, top)):
            if b is t:
                self.fail(f"cannot run in place (top {i} is bottom {i})")
        if first.shape[self.axis] != self.channels:
            self.fail(f"input size incompatible with convolution kernel: bottom shape "
                      f"{tuple(first.shape)} has {first.shape[self.axis]} channels, the weights "
                      f"expect {self.channels}", ShapeError)
        self.num = first.count_range(0, self.axis)
        self.in_hw = tuple(first.shape[self.axis + 1:])
        self.out_hw = tuple(self._output_size(self.in_hw[d], d) for d in range(2))
        if min(self.out_hw) <= 0:
            self.fail(f"kernel {self.kernel} (dilation {self.dilation}, pad {self.pad}) does not "
                      f"fit the input {self.in_hw}: output would be {self.out_hw}", ShapeError)
        top_shape = tuple(first.shape[:self.axis]) + (self.num_output,) + self.out_hw
        for t in top:
            t.reshape(top_shape)
        # The image/response pair in convolution sense.
        img_hw, res_hw = (self.out_hw, self.in_hw) if self.reverse else (self.in_hw, self.out_hw)
        self.img_shape = (self.num, self.conv_in) + img_hw
        self.res_shape = (self.num, self.conv_out, res_hw[0] * res_hw[1])
        lo = self.num * res_hw[0] * res_hw[1]
        xp, dtype = first.xp, first.dtype
        self.col = self._col.get(xp, (self.conv_in * self.kernel[0] * self.kernel[1], lo), dtype)
        self.rows = self._rows.get(xp, (self.conv_out, lo), dtype)
        self.padded = None
        if self.pad != (0, 0):
            self.padded = self._padded.get(xp, (self.num, self.conv_in, img_hw[0] + 2 * self.pad[0],
                                                img_hw[1] + 2 * self.pad[1]), dtype)
        self._cached = None

    # -- the three GEMM steps, per group ------------------------------------------------------
    def _weights(self):
        w = self.blobs[0]
        return w.xdata.reshape(self.group, self.conv_out // self.group, -1)

    def _im2col(self, image):
        return cols.im2col(image.reshape(self.img_shape), self.col, self.kernel, self.stride,
                           self.pad, self.dilation, self.padded)

    def _col2im(self, image):
        cols.col2im(self.col, image.reshape(self.img_shape), self.kernel, self.stride, self.pad,
                    self.dilation)

    def _response_rows(self):
        """rows[g] = W[g] @ col[g]."""
        xp = self.xp_of(self.blobs[0])
        w = self._weights()
        col = self.col.reshape(self.group, -1, self.col.shape[1])
        rows = self.rows.reshape(self.group, -1, self.rows.shape[1])
        for g in range(self.group):
            xp.matmul(w[g], col[g], out=rows[g])

    def _columns_from_rows(self):
        """col[g] = W[g]^T @ rows[g]."""
        xp = self.xp_of(self.blobs[0])
        w = self._weights()
        col = self.col.reshape(self.group, -1, self.col.shape[1])
        rows = self.rows.reshape(self.group, -1, self.rows.shape[1])
        for g in range(self.group):
            xp.matmul(w[g].T, rows[g], out=col[g])

    def _accumulate_weight_diff(self):
        """dW[g] += rows[g] @ col[g]^T."""
        xp = self.xp_of(self.blobs[0])
        dw = self.blobs[0].xdiff.reshape(self.group, self.conv_out // self.group, -1)
        col = self.col.reshape(self.group, -1, self.col.shape[1])
        rows = self.rows.reshape(self.group, -1, self.rows.shape[1])
        for g in range(self.group):
            dw[g] += xp.matmul(rows[g], col[g].T)

    def _bias(self):
        return self.blobs[1].xdata if self.bias_term else None

    def _accumulate_bias_diff(self, diff3):
        """db += the top diff (N, num_output, L) summed over batch and space."""
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].xdiff[...] += diff3.sum(axis=(0, 2))


@register("Convolution")
class ConvolutionLayer(_ConvolutionBase):
    """top = W * bottom + b, with Caffe's kernel/stride/pad/dilation/group settings."""

    def _output_size(self, size, d):
        return cols.conv_output_size(size, self.kernel[d], self.stride[d], self.pad[d],
                                     self.dilation[d])

    def forward(self, bottom, top):
        for i, (b, t) in enumerate(zip(bottom, top)):
            self._im2col(b.xdata)
            self._response_rows()
            cols.from_rows(self.rows, t.xdata.reshape(self.res_shape), self._bias())
            self._cached = i

    def backward(self, top, propagate_down, bottom):
        want_w = self.param_propagate_down[0]
        # Last pair first: its columns are still in the buffer from forward.
        for i in reversed(range(len(top))):
            diff3 = top[i].xdiff.reshape(self.res_shape)
            self._accumulate_bias_diff(diff3)
            if not (want_w or propagate_down[i]):
                continue
            cols.to_rows(diff3, self.rows)
            if want_w:
                if self._cached != i:
                    self._im2col(bottom[i].xdata)
                self._accumulate_weight_diff()
            if propagate_down[i]:
                self._columns_from_rows()
                self._col2im(bottom[i].xdiff)
            self._cached = None


@register("Deconvolution")
class DeconvolutionLayer(_ConvolutionBase):
    """The transpose of Convolution: top = W^T * bottom + b, output size s(H-1) + d(k-1)+1 - 2p;
    weights of shape (C, num_output/group, kh, kw)."""
    reverse = True

    def _output_size(self, size, d):
        return cols.deconv_output_size(size, self.kernel[d], self.stride[d], self.pad[d],
                                       self.dilation[d])

    def forward(self, bottom, top):
        for i, (b, t) in enumerate(zip(bottom, top)):
            cols.to_rows(b.xdata.reshape(self.res_shape), self.rows)
            self._columns_from_rows()
            self._col2im(t.xdata)
            if self.bias_term:
                t3 = t.xdata.reshape(self.num, self.num_output, -1)
                t3 += self.blobs[1].xdata.reshape(1, -1, 1)
            self._cached = i

    def backward(self, top, propagate_down, bottom):
        want_w = self.param_propagate_down[0]
        for i in reversed(range(len(top))):
            diff = top[i].xdiff
            self._accumulate_bias_diff(diff.reshape(self.num, self.num_output, -1))
            if not (want_w or propagate_down[i]):
                continue
            self._im2col(diff)
            if want_w:
                if self._cached != i:
                    cols.to_rows(bottom[i].xdata.reshape(self.res_shape), self.rows)
                self._accumulate_weight_diff()
            if propagate_down[i]:
                self._response_rows()
                cols.from_rows(self.rows, bottom[i].xdiff.reshape(self.res_shape))
            self._cached = None
