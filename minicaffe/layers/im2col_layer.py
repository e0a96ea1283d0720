"""Im2col (convolution_param kernel/stride/pad/dilation): a convolution's columns as a layer.

The top is (N, C*kh*kw, OH, OW) with row c*kh*kw + i*kw + j holding
x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] (0 in the padding) -- Caffe's column layout,
one image per item. Backward is col2im (sums overlaps).
"""
from ..kernels import array_im2col as win
from ..errors import ShapeError
from ..layer import Layer, register, shape_text
from .conv_geometry import read_geometry


def _windows_view(xp, padded, kernel, stride, dilation, out_hw):
    """Strided view (M, C, kh, kw, OH, OW) of ``padded`` (M, C, Hp, Wp):
    view[m, c, i, j, oh, ow] = padded[m, c, oh*sh + i*dh, ow*sw + j*dw]."""
    sm, sc, sh, sw = padded.strides
    shape = padded.shape[:2] + tuple(kernel) + tuple(out_hw)
    strides = (sm, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1])
    return xp.lib.stride_tricks.as_strided(padded, shape=shape, strides=strides)


@register("Im2col")
class Im2colLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        read_geometry(self, self.layer_param.convolution_param, bottom[0])
        self._padded = win.Scratch()
        self._key = None

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        b = bottom[0]
        if b.num_axes != self.axis + 3:
            self.fail(f"bottom num_axes may not change: got shape {shape_text(b.shape)}",
                      ShapeError)
        c, h, w = b.shape[self.axis:]
        ext = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel))
        if h + 2 * self.pad[0] < ext[0] or w + 2 * self.pad[1] < ext[1]:
            self.fail(f"kernel {self.kernel} (dilation {self.dilation}, pad {self.pad}) does not "
                      f"fit the input of shape {shape_text(b.shape)}", ShapeError)
        self.out_hw = tuple((s + 2 * p - e) // st + 1 for s, p, e, st in
                            zip((h, w), self.pad, ext, self.stride))
        self.num = b.count_range(0, self.axis)
        self.chw = (c, h, w)
        top[0].reshape(tuple(b.shape[:self.axis]) + (c * self.kernel[0] * self.kernel[1],) +
                       self.out_hw)
        key = ((h, w), self.out_hw)
        if key != self._key:
            self._key = key
            self.offsets = win.window_offsets(self.kernel, self.stride, self.pad, (h, w),
                                              self.out_hw, self.dilation)

    def forward(self, bottom, top):
        x = bottom[0].xdata
        xp = bottom[0].xp
        c, h, w = self.chw
        ph, pw = self.pad
        x = x.reshape(self.num, c, h, w)
        if ph or pw:
            padded = self._padded.get(xp, (self.num, c, h + 2 * ph, w + 2 * pw), x.dtype)
            padded[...] = 0
            padded[:, :, ph:ph + h, pw:pw + w] = x
        else:
            padded = x
        kh, kw = self.kernel
        cols = top[0].xdata.reshape((self.num, c, kh, kw) + self.out_hw)
        cols[...] = _windows_view(xp, padded, self.kernel, self.stride, self.dilation,
                                  self.out_hw)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        c, h, w = self.chw
        kh, kw = self.kernel
        dx = bottom[0].xdiff.reshape(self.num, c, h, w)
        dy = top[0].xdiff.reshape((self.num, c, kh * kw) + self.out_hw)
        dx[...] = 0
        for k, (oh, ow), (ih, iw) in self.offsets:
            dx[:, :, ih, iw] += dy[:, :, k, oh, ow]

