"""SoftmaxWithLoss on the device without host syncs.

Forward: one thread per (outer, inner) position computes the softmax over the C classes
(max subtracted), writes the probabilities, and the loss term -log(max(p[label], FLT_MIN))
and a valid flag (0 for ignore_label). A label outside [0, C) gives a NaN term, so a bad
label shows up in the loss instead of reading out of bounds. The caller sums the terms on the
device. Backward: dx = (prob - onehot(label)) * scale[0], zero at ignored positions, with
the scale (loss weight / normaliser) read from device memory.
"""
import numpy as np

from . import RAW_SOURCES, i32, launch, raw_function

RAW_SOURCES["softmax_loss"] = r"""
extern "C" __global__ void softmax_loss_forward(const real* x, const real* label, int outer,
                                                int C, int inner, int has_ignore,
                                                int ignore_label, real* prob, real* term,
                                                real* valid) {
  const int n = outer * inner;
  MC_KERNEL_LOOP(j, n) {
    const int o = j / inner;
    const int k = j - o * inner;
    const real* xs = x + (size_t)o * C * inner + k;
    real* ps = prob + (size_t)o * C * inner + k;
    real mx = xs[0];
    for (int c = 1; c < C; ++c) {
      const real v = xs[c * inner];
      if (v > mx || v != v) mx = v;
    }
    real sum = 0;
    for (int c = 0; c < C; ++c) {
      const real e = exp(xs[c * inner] - mx);
      ps[c * inner] = e;
      sum += e;
    }
    for (int c = 0; c < C; ++c) ps[c * inner] /= sum;
    const int lab = (int)label[j];
    if (has_ignore && lab == ignore_label) {
      term[j] = 0;
      valid[j] = 0;
    } else if (lab < 0 || lab >= C) {
      term[j] = (real)__int_as_float(0x7fc00000);
      valid[j] = 1;
    } else {
      real p = ps[lab * inner];
      if (p < (real)MC_FLT_MIN) p = (real)MC_FLT_MIN;
      term[j] = -log(p);
      valid[j] = 1;
    }
  }
}

extern "C" __global__ void softmax_loss_backward(const real* prob, const real* label, int outer,
                                                 int C, int inner, int has_ignore,
                                                 int ignore_label, const real* scale,
                                                 real* dx) {
  const int n = outer * C * inner;
  const real s = scale[0];
  MC_KERNEL_LOOP(i, n) {
    const int k = i % inner;
    const int c = (i / inner) % C;
    const int o = i / (inner * C);
    const int lab = (int)label[o * inner + k];
    real g;
    if (has_ignore && lab == ignore_label) {
      g = 0;
    } else {
      g = prob[i] - (c == lab ? (real)1 : (real)0);
    }
    dx[i] = g * s;
  }
}
"""


def forward(x, label, prob, term, valid, outer, C, inner, ignore_label=None):
    """Fill prob (outer*C*inner), term and valid (outer*inner) from logits x and labels."""
    launch(raw_function("softmax_loss", "softmax_loss_forward", x.dtype), outer * inner,
           (x, label, i32(outer), i32(C), i32(inner), i32(ignore_label is not None),
            i32(ignore_label or 0), prob, term, valid))


def backward(prob, label, scale, dx, outer, C, inner, ignore_label=None):
    """dx = (prob - onehot) * scale[0] (0 where the label is ignored)."""
    launch(raw_function("softmax_loss", "softmax_loss_backward", prob.dtype), outer * C * inner,
           (prob, label, i32(outer), i32(C), i32(inner), i32(ignore_label is not None),
            i32(ignore_label or 0), scale, dx))


__all__ = ["forward", "backward", "np"]
