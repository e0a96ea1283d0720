"""Caffe's 2-D average pooling on oneDNN: one object per configuration, its primitives made once.

At the interface x and y are C-contiguous float32 NCHW arrays and the output size is Caffe's
(the caller's, ceil rule and dropped last window included); the right/bottom padding given to
oneDNN is whatever makes its size rule give that size. Caffe divides by the window clipped to
the padded image [-pad, size + pad): padding counts, overhang past it does not. oneDNN's
``avg_exclude_padding`` (real pixels) is that when pad is 0; ``avg_include_padding`` (the
whole kernel) is that when no window overhangs the padded image. Other configurations raise
ValueError (the caller's reference code serves them).

Inside, x is reordered to nChw8c and y is in oneDNN's pick: its jit kernels do not take nchw
(there it runs a plain loop, 3-6x slower than the reference on the example's shapes).
"""

from . import library as L
from .convolution import _check, _pair, _result
from .primitive import Handles, Pass

TAG_NCHW8C = 102
POOLING_AVG_INCLUDE_PADDING, POOLING_AVG_EXCLUDE_PADDING = 0x2FF, 0x3FF


def algorithm(input_hw, output_hw, kernel, stride, pad):
    """(oneDNN's average algorithm with Caffe's divisor, right padding); ValueError if none."""
    pad_r = [(o - 1) * s + k - i - p for o, s, k, i, p
             in zip(output_hw, stride, kernel, input_hw, pad)]
    if not any(pad):
        return POOLING_AVG_EXCLUDE_PADDING, pad_r
    if all(r <= p for r, p in zip(pad_r, pad)):
        return POOLING_AVG_INCLUDE_PADDING, pad_r
    raise ValueError(f"a window overhangs the padded image (right padding {pad_r} > pad "
                     f"{list(pad)}): Caffe's divisor is not oneDNN's")


class AveragePooling:
    """Forward and backward of one AVE pooling configuration; gradients overwrite ``out``.

    Raises ``OneDNNUnavailable`` when the library cannot be loaded, ``OneDNNError`` when
    oneDNN refuses the configuration, ValueError when Caffe's divisor has no oneDNN match.
    """

    def __init__(self, input_shape, output_hw, kernel, stride=1, pad=0):
        n, c, h, w = (int(v) for v in input_shape)
        kernel, stride, pad = _pair(kernel, "kernel"), _pair(stride, "stride"), _pair(pad, "pad")
        output_hw = _pair(output_hw, "output_hw")
        if min(kernel) < 1 or min(stride) < 1 or min(pad) < 0 or min(output_hw) < 1:
            raise ValueError("kernel, stride and output size must be positive, pad "
                             "non-negative")
        alg, pad_r = algorithm((h, w), output_hw, kernel, stride, pad)
        self.input_shape, self.output_shape = (n, c, h, w), (n, c) + output_hw
        self._h = h_ = Handles()
        md = h_.memory_desc
        self._x, self._y = md(self.input_shape, L.TAG_NCHW), md(self.output_shape, L.TAG_NCHW)
        x_in, y_in = md(self.input_shape, TAG_NCHW8C), md(self.output_shape, L.TAG_ANY)
        geometry = (L.dims(stride), L.dims(kernel), L.dims((0, 0)), L.dims(pad),
                    L.dims(pad_r))
        fpd = h_.primitive_desc(h_.lib.dnnl_pooling_forward_primitive_desc_create, h_.engine,
                                L.FORWARD_TRAINING, alg, x_in, y_in, *geometry, h_.attr())
        self._forward = Pass(h_, fpd, {L.ARG_SRC: self._x, L.ARG_DST: self._y}, {L.ARG_DST})
        # Made on the first backward: a TEST-phase net never pays for it.
        self._make_backward = lambda: Pass(h_, h_.primitive_desc(
            h_.lib.dnnl_pooling_backward_primitive_desc_create, h_.engine, alg, x_in, y_in,
            *geometry, fpd, h_.attr()), {L.ARG_DIFF_DST: self._y, L.ARG_DIFF_SRC: self._x},
            {L.ARG_DIFF_SRC})
        self._backward = None

    def _open(self):
        if self._forward is None:   # its descriptors are gone: running would crash
            raise RuntimeError("this AveragePooling was closed")

    def forward(self, x, out=None):
        """y = the windows' averages, written into ``out`` if given."""
        self._open()
        arrays = {L.ARG_SRC: _check(x, self.input_shape, "x"),
                  L.ARG_DST: _result(out, self.output_shape, "out")}
        self._forward.run(arrays)
        return arrays[L.ARG_DST]

    def backward(self, dy, out=None):
        """dx, the gradient with respect to the input (overwritten, not accumulated)."""
        self._open()
        if self._backward is None:
            self._backward = self._make_backward()
        arrays = {L.ARG_DIFF_DST: _check(dy, self.output_shape, "dy"),
                  L.ARG_DIFF_SRC: _result(out, self.input_shape, "out")}
        self._backward.run(arrays)
        return arrays[L.ARG_DIFF_SRC]

    def implementations(self):
        """{pass: (oneDNN implementation name, reorders per call)} for the passes made so far."""
        passes = {"forward": self._forward, "backward": self._backward}
        return {k: (p.implementation, p.reorders) for k, p in passes.items() if p is not None}

    def close(self):
        """Free the oneDNN objects now (otherwise at garbage collection)."""
        self._forward = self._backward = self._make_backward = None
        self._h.close()
