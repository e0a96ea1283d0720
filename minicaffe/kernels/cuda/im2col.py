"""im2col / col2im on CuPy arrays for minicaffe's channels-last column layout (see
``kernels.array_im2col``), behind ``kernels.get("im2col", cupy)``, same arguments as there:

    col[g, (n, oh, ow), (i, j, c)] = padded[g, n, oh*sh + i*dh, ow*sw + j*dw, c]

with ``padded`` (G, N, Hp, Wp, Cg) the zero-bordered channels-last image and ``col``
(G, N*OH*OW, KH*KW*Cg). ``im2col``: one thread per column entry (consecutive threads read
and write consecutive channels). ``col2im``: one thread per entry of ``padded`` gathers the
column entries taken from it and overwrites it (no atomics, deterministic sums).
"""
from . import RAW_SOURCES, i32, launch, raw_function

RAW_SOURCES["im2col"] = r"""
extern "C" __global__ void im2col_nhwc(const real* padded, int total, int Hp, int Wp, int Cg,
                                       int OH, int OW, int kh, int kw, int sh, int sw, int dh,
                                       int dw, real* col) {
  MC_KERNEL_LOOP(t, total) {
    const int c = t % Cg;
    int r = t / Cg;
    const int j = r % kw;
    r /= kw;
    const int i = r % kh;
    r /= kh;
    const int ow = r % OW;
    r /= OW;
    const int oh = r % OH;
    r /= OH;                               // r = g * N + n
    const size_t src = (((size_t)r * Hp + oh * sh + i * dh) * Wp + ow * sw + j * dw) * Cg + c;
    col[t] = padded[src];
  }
}

extern "C" __global__ void col2im_nhwc(const real* col, int total, int Hp, int Wp, int Cg,
                                       int OH, int OW, int kh, int kw, int sh, int sw, int dh,
                                       int dw, real* padded) {
  MC_KERNEL_LOOP(t, total) {
    const int c = t % Cg;
    int r = t / Cg;
    const int w = r % Wp;
    r /= Wp;
    const int h = r % Hp;
    r /= Hp;                               // r = g * N + n
    real v = 0;
    for (int i = 0; i < kh; ++i) {
      const int hr = h - i * dh;
      if (hr < 0) break;
      if (hr % sh) continue;
      const int oh = hr / sh;
      if (oh >= OH) continue;
      for (int j = 0; j < kw; ++j) {
        const int wr = w - j * dw;
        if (wr < 0) break;
        if (wr % sw) continue;
        const int ow = wr / sw;
        if (ow >= OW) continue;
        v += col[((((size_t)r * OH + oh) * OW + ow) * kh + i) * kw * Cg + (size_t)j * Cg + c];
      }
    }
    padded[t] = v;
  }
}
"""


def _args(padded, kernel, stride, dilation, out_hw):
    _, _, hp, wp, cg = padded.shape
    return [i32(v) for v in (hp, wp, cg, out_hw[0], out_hw[1], kernel[0], kernel[1],
                             stride[0], stride[1], dilation[0], dilation[1])]


def im2col(padded, col, kernel, stride, dilation, out_hw):
    """Fill col (G, N*OH*OW, KH*KW*Cg) from padded (G, N, Hp, Wp, Cg); returns col."""
    launch(raw_function("im2col", "im2col_nhwc", padded.dtype), col.size,
           (padded, i32(col.size), *_args(padded, kernel, stride, dilation, out_hw), col))
    return col


def col2im(col, padded, kernel, stride, dilation, out_hw):
    """padded = the sum of the column entries taken from each of its positions (overwrites)."""
    launch(raw_function("im2col", "col2im_nhwc", col.dtype), padded.size,
           (col, i32(padded.size), *_args(padded, kernel, stride, dilation, out_hw), padded))
    return padded
