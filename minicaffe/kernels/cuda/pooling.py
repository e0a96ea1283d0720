"""Pooling on CuPy arrays with Caffe's GPU formulas, behind ``kernels.get("pooling", cupy)``.

The functions take the same arguments as the compiled CPU kernels the Pooling layer calls
(planes: x3 (N*C, H, W), y3 (N*C, PH, PW)):

* ``max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw)``: one thread per output; the
  window's first strict maximum in row-major order, starting from -FLT_MAX (NaN never wins);
  argmax3 (int32) gets the winner's flat index h * W + w in its plane, -1 when none;
* ``max_backward(dy3, argmax3, dx3)``: dx3 = 0, then each output adds its gradient at its
  winner (atomic adds: overlapping windows may add in any order);
* ``ave_forward(x3, y3, kh, kw, sh, sw, ph, pw, size)``: the window's real pixels summed and
  divided by the window clipped to the padded image (``size``, the host table of those
  divisors, is recomputed in the kernel and not read);
* ``ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw, size)``: one thread per input pixel
  gathers dy / divisor over the windows covering it (Caffe's scheme; deterministic).
"""
from . import RAW_SOURCES, i32, launch, raw_function

# The forward kernels' start: one thread per pooled output i, its plane and its window's
# first row hs and column ws (before clipping).
_FORWARD_HEAD = r"""
extern "C" __global__ void {name}(const real* x, int total, int H, int W, int PH,
{pad}int PW, int kh, int kw, int sh, int sw, int ph,
{pad}int pw, real* y{outputs}) {{
  MC_KERNEL_LOOP(i, total) {{
    const int pwi = i % PW;
    const int phi = (i / PW) % PH;
    const int plane = i / (PW * PH);
    int hs = phi * sh - ph;
    int ws = pwi * sw - pw;
"""


def _forward_kernel(name, outputs, body):
    """``_FORWARD_HEAD`` for kernel ``name`` (extra parameters ``outputs``), then ``body``
    (its leading newline dropped)."""
    pad = " " * len(f'extern "C" __global__ void {name}(')
    return _FORWARD_HEAD.format(name=name, pad=pad, outputs=outputs) + body.lstrip("\n")


_MAX_FORWARD = r"""
    const int he = min(hs + kh, H);
    const int we = min(ws + kw, W);
    hs = max(hs, 0);
    ws = max(ws, 0);
    const real* xs = x + (size_t)plane * H * W;
    real best = -MC_FLT_MAX;
    int arg = -1;
    for (int h = hs; h < he; ++h) {
      for (int w = ws; w < we; ++w) {
        const real v = xs[h * W + w];
        if (v > best) {
          best = v;
          arg = h * W + w;
        }
      }
    }
    y[i] = best;
    mask[i] = arg;
  }
}
"""

_MAX_BACKWARD = r"""
extern "C" __global__ void max_pool_backward(const real* dy, const int* mask, int total,
                                             int PHW, int HW, real* dx) {
  MC_KERNEL_LOOP(i, total) {
    const int a = mask[i];
    if (a >= 0) atomicAdd(dx + (size_t)(i / PHW) * HW + a, dy[i]);
  }
}
"""

_AVE_FORWARD = r"""
    int he = min(hs + kh, H + ph);
    int we = min(ws + kw, W + pw);
    const int size = (he - hs) * (we - ws);
    hs = max(hs, 0);
    ws = max(ws, 0);
    he = min(he, H);
    we = min(we, W);
    const real* xs = x + (size_t)plane * H * W;
    real s = 0;
    for (int h = hs; h < he; ++h) {
      for (int w = ws; w < we; ++w) s += xs[h * W + w];
    }
    y[i] = s / (real)size;
  }
}
"""

_AVE_BACKWARD = r"""
extern "C" __global__ void ave_pool_backward(const real* dy, int total, int H, int W, int PH,
                                             int PW, int kh, int kw, int sh, int sw, int ph,
                                             int pw, real* dx) {
  MC_KERNEL_LOOP(i, total) {
    const int w = i % W + pw;
    const int h = (i / W) % H + ph;
    const int plane = i / (W * H);
    const int phs = (h < kh) ? 0 : (h - kh) / sh + 1;
    const int phe = min(h / sh + 1, PH);
    const int pws = (w < kw) ? 0 : (w - kw) / sw + 1;
    const int pwe = min(w / sw + 1, PW);
    const real* g = dy + (size_t)plane * PH * PW;
    real v = 0;
    for (int a = phs; a < phe; ++a) {
      for (int b = pws; b < pwe; ++b) {
        const int hs = a * sh - ph;
        const int ws = b * sw - pw;
        const int he = min(hs + kh, H + ph);
        const int we = min(ws + kw, W + pw);
        v += g[a * PW + b] / (real)((he - hs) * (we - ws));
      }
    }
    dx[i] = v;
  }
}
"""

RAW_SOURCES["pooling"] = (_forward_kernel("max_pool_forward", ", int* mask", _MAX_FORWARD) +
                          _MAX_BACKWARD +
                          _forward_kernel("ave_pool_forward", "", _AVE_FORWARD) +
                          _AVE_BACKWARD)


def _dims(x3, y3, geometry):
    _, h, w = x3.shape
    _, ph_out, pw_out = y3.shape
    return [i32(v) for v in (h, w, ph_out, pw_out) + tuple(geometry)]


def max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw):
    launch(raw_function("pooling", "max_pool_forward", x3.dtype), y3.size,
           (x3, i32(y3.size), *_dims(x3, y3, (kh, kw, sh, sw, ph, pw)), y3, argmax3))


def max_backward(dy3, argmax3, dx3):
    dx3.fill(0)
    phw = dy3.shape[1] * dy3.shape[2]
    hw = dx3.shape[1] * dx3.shape[2]
    launch(raw_function("pooling", "max_pool_backward", dy3.dtype), dy3.size,
           (dy3, argmax3, i32(dy3.size), i32(phw), i32(hw), dx3))


def ave_forward(x3, y3, kh, kw, sh, sw, ph, pw, size=None):
    launch(raw_function("pooling", "ave_pool_forward", x3.dtype), y3.size,
           (x3, i32(y3.size), *_dims(x3, y3, (kh, kw, sh, sw, ph, pw)), y3))


def ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw, size=None):
    launch(raw_function("pooling", "ave_pool_backward", dy3.dtype), dx3.size,
           (dy3, i32(dx3.size), *_dims(dx3, dy3, (kh, kw, sh, sw, ph, pw)), dx3))
