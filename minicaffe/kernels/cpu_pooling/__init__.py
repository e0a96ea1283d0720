"""Pooling kernels (numba, CPU) over planes: x3 (N*C, H, W), y3 (N*C, PH, PW), one plane
(image x channel) per parallel task. Same functions and arguments as the CUDA family
``minicaffe.kernels.cuda.pooling``:

* ``max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw)``: the window's first strict maximum
  in row-major order, starting from -FLT_MAX (a NaN pixel never wins); argmax3 (int32) gets
  the winner's flat index h * W + w in its plane, -1 when none;
* ``max_backward(dy3, argmax3, dx3)``: dx3 = 0, then each output adds its gradient at its
  winner;
* ``ave_forward(x3, y3, kh, kw, sh, sw, ph, pw, size)``: the window's real pixels summed and
  divided by the window clipped to the padded image (recomputed here; ``size``, the layer's
  table of those divisors, is accepted for the common signature and not read);
* ``ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw, size)``: dx3 = 0, then each output spreads
  dy / divisor over its window's real pixels.

Window geometry (Caffe's): output (oh, ow) starts at (oh*sh - ph, ow*sw - pw); its pixels are
those of the kh x kw window that fall inside the image.

How they run. A plane's output rows are short (16 or 8 values), too short for LLVM's vector
loops, and one window at a time is a chain of dependent compares (the MAX scan's branch
mispredicts, too). So the forward passes and AVE backward go over all outputs of a plane in
one loop, through a plane buffer (``planes``, ``max_planes``, ``ave_planes``), with results
bit for bit those of the one-window loops (``direct``), which still serve arrays that are not
C-contiguous and geometries with few output columns (global pooling). max_backward indexes
the flat plane with the argmax (no division per output).

The entry points here are plain Python that pick a parallel kernel: a cached non-parallel
numba function calling a cached parallel one segfaults when it is loaded from a cache that
another process partly wrote (numba/numba#4807, #8578; seen here).
"""
from .ave_planes import ave_backward as _ave_backward_buffered
from .ave_planes import ave_forward as _ave_forward_buffered
from .direct import ave_backward as _ave_backward_direct
from .direct import ave_forward as _ave_forward_direct
from .direct import max_backward as _max_backward_direct
from .direct import max_forward as _max_forward_direct
from .max_planes import max_backward as _max_backward_flat
from .max_planes import max_forward as _max_forward_buffered
from .planes import layout


def _pick(direct, planes, arrays, buffer=None):
    """``planes`` when every array of ``arrays`` is C-contiguous and, for the plane-buffer
    passes, ``layout(*buffer)`` says the buffer pays; else ``direct`` (same arguments)."""
    if all(a.flags.c_contiguous for a in arrays) and (buffer is None or layout(*buffer)[-1]):
        return planes
    return direct


def max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw):
    buffer = (y3.shape[1], y3.shape[2], x3.shape[2], kh, kw, sh, sw, pw)
    kernel = _pick(_max_forward_direct, _max_forward_buffered, (y3, argmax3), buffer)
    kernel(x3, y3, argmax3, kh, kw, sh, sw, ph, pw)


def max_backward(dy3, argmax3, dx3):
    _pick(_max_backward_direct, _max_backward_flat, (dx3,))(dy3, argmax3, dx3)


def ave_forward(x3, y3, kh, kw, sh, sw, ph, pw, size=None):
    buffer = (y3.shape[1], y3.shape[2], x3.shape[2], kh, kw, sh, sw, pw)
    kernel = _pick(_ave_forward_direct, _ave_forward_buffered, (y3,), buffer)
    kernel(x3, y3, kh, kw, sh, sw, ph, pw)


def ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw, size=None):
    buffer = (dy3.shape[1], dy3.shape[2], dx3.shape[2], kh, kw, sh, sw, pw)
    kernel = _pick(_ave_backward_direct, _ave_backward_buffered, (dy3,), buffer)
    kernel(dy3, dx3, kh, kw, sh, sw, ph, pw)
