"""Per-channel kernels over arrays viewed as (outer, C, inner): BatchNorm, Scale, Bias.

``channel_sums`` reduces in one pass, in double precision, s1[c] = sum(a) and s2[c] =
sum(a * b) over the outer and inner axes (b = a gives the sum of squares; BatchNorm's
backward passes dy and the centred input). Each block reduces a slice of one channel in
shared memory and adds its result atomically, so the pass reads the activation once.
"""
import numpy as np

from . import RAW_SOURCES, THREADS, i32, launch, raw_function, real

RAW_SOURCES["channels"] = r"""
extern "C" __global__ void channel_sums(const real* a, const real* b, int outer, int C,
                                        int inner, int want_dot, double* s1, double* s2) {
  __shared__ double sh1[256];
  __shared__ double sh2[256];
  const int c = blockIdx.x;
  const int m = outer * inner;
  double t1 = 0.0, t2 = 0.0;
  for (int j = blockIdx.y * blockDim.x + threadIdx.x; j < m; j += blockDim.x * gridDim.y) {
    const int o = j / inner;
    const int idx = (o * C + c) * inner + (j - o * inner);
    const double va = a[idx];
    t1 += va;
    if (want_dot) t2 += va * (double)b[idx];
  }
  sh1[threadIdx.x] = t1;
  sh2[threadIdx.x] = t2;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      sh1[threadIdx.x] += sh1[threadIdx.x + s];
      sh2[threadIdx.x] += sh2[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(s1 + c, sh1[0]);
    if (want_dot) atomicAdd(s2 + c, sh2[0]);
  }
}

// Training statistics from the sums: mean, 1/sqrt(var + eps) and the moving averages
// (Caffe: sums *= lambda, += batch values with the unbiased variance; factor = factor *
// lambda + 1).
extern "C" __global__ void bn_finalize(const double* s1, const double* s2, int C, double m,
                                       double eps, double lam, double correction,
                                       real* mean, real* inv_std, real* mean_sum,
                                       real* var_sum, real* factor) {
  MC_KERNEL_LOOP(c, C) {
    const double mu = s1[c] / m;
    double var = s2[c] / m - mu * mu;
    if (var < 0.0) var = 0.0;
    mean[c] = (real)mu;
    inv_std[c] = (real)(1.0 / sqrt(var + eps));
    mean_sum[c] = mean_sum[c] * (real)lam + (real)mu;
    var_sum[c] = var_sum[c] * (real)lam + (real)(correction * var);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) factor[0] = factor[0] * (real)lam + (real)1.0;
}

// Global statistics: mean = sum / factor, var = var_sum / factor (factor 0 gives zeros).
extern "C" __global__ void bn_global_stats(const real* mean_sum, const real* var_sum,
                                           const real* factor, int C, double eps,
                                           real* mean, real* inv_std) {
  const double f = (double)factor[0];
  const double s = f == 0.0 ? 0.0 : 1.0 / f;
  MC_KERNEL_LOOP(c, C) {
    mean[c] = (real)((double)mean_sum[c] * s);
    inv_std[c] = (real)(1.0 / sqrt((double)var_sum[c] * s + eps));
  }
}

// y = (x - mean[c]) * inv_std[c]; the centred input kept in cen when save_cen. y may be x.
extern "C" __global__ void bn_normalize(const real* x, const real* mean, const real* inv_std,
                                        int n, int C, int inner, int save_cen, real* cen,
                                        real* y) {
  MC_KERNEL_LOOP(i, n) {
    const int c = (i / inner) % C;
    const real d = x[i] - mean[c];
    if (save_cen) cen[i] = d;
    y[i] = d * inv_std[c];
  }
}

// dx = inv_std * (dy - mean(dy)) - cen * inv_std^3 * mean(dy * cen); dx may be dy.
extern "C" __global__ void bn_backward(const real* dy, const real* cen, const double* s1,
                                       const double* s2, const real* inv_std, int n, int C,
                                       int inner, double m, real* dx) {
  MC_KERNEL_LOOP(i, n) {
    const int c = (i / inner) % C;
    const double is = inv_std[c];
    const real mean_dy = (real)(s1[c] / m);
    const real k = (real)(s2[c] * is * is * is / m);
    dx[i] = (dy[i] - mean_dy) * (real)is - cen[i] * k;
  }
}

// y = x * s[c] (if has_s) + b[c] (if has_b), c = (i / inner) % dim; y may be x.
extern "C" __global__ void affine(const real* x, const real* s, const real* b, int n, int dim,
                                  int inner, int has_s, int has_b, real* y) {
  MC_KERNEL_LOOP(i, n) {
    const int c = (i / inner) % dim;
    real v = x[i];
    if (has_s) v *= s[c];
    if (has_b) v += b[c];
    y[i] = v;
  }
}

// d[c] += (real)s[c]: accumulate a double per-channel sum into a parameter gradient.
extern "C" __global__ void accumulate(const double* s, int n, real* d) {
  MC_KERNEL_LOOP(i, n) { d[i] += (real)s[i]; }
}
"""


def _flat(a):
    return a.reshape(-1)


def channel_sums(cp, a, b, outer, dim, inner, want_dot=True, out=None):
    """(s1, s2): double per-channel sums of a and of a * b (s2 None without want_dot)."""
    if out is None:
        out = cp.zeros((2, dim), dtype=np.float64)
    else:
        out.fill(0)
    m = outer * inner
    if m and dim:
        per_block = THREADS * 4
        grid_y = max(1, min((m + per_block - 1) // per_block, max(1, 1024 // dim), 65535))
        fn = raw_function("channels", "channel_sums", a.dtype)
        fn((dim, grid_y), (THREADS,), (a, b if b is not None else a, i32(outer), i32(dim),
                                       i32(inner), i32(1 if want_dot else 0),
                                       out[0], out[1]))
    return out[0], (out[1] if want_dot else None)


def bn_forward_train(cp, x, y, cen, blobs, outer, C, inner, eps, lam, stats):
    """Batch statistics, moving averages and y = (x - mean) * inv_std in three launches.
    ``stats`` is a (2, C) float array receiving mean and inv_std; returns nothing."""
    dt = x.dtype
    m = outer * inner
    sums = channel_sums(cp, x, x, outer, C, inner, True)
    mean_sum, var_sum, factor = (_flat(b) for b in blobs)
    correction = m / (m - 1.0) if m > 1 else 1.0
    launch(raw_function("channels", "bn_finalize", dt), C,
           (sums[0], sums[1], i32(C), np.float64(m), np.float64(eps), np.float64(lam),
            np.float64(correction), stats[0], stats[1], mean_sum, var_sum, factor))
    n = outer * C * inner
    launch(raw_function("channels", "bn_normalize", dt), n,
           (x, stats[0], stats[1], i32(n), i32(C), i32(inner), i32(1), cen, y))


def bn_forward_global(cp, x, y, blobs, outer, C, inner, eps, stats):
    """y = (x - mean) * inv_std from the stored statistics, without reading them on the host."""
    dt = x.dtype
    mean_sum, var_sum, factor = (_flat(b) for b in blobs)
    launch(raw_function("channels", "bn_global_stats", dt), C,
           (mean_sum, var_sum, factor, i32(C), np.float64(eps), stats[0], stats[1]))
    n = outer * C * inner
    launch(raw_function("channels", "bn_normalize", dt), n,
           (x, stats[0], stats[1], i32(n), i32(C), i32(inner), i32(0), y, y))


def bn_backward_train(cp, dy, cen, dx, inv_std, outer, C, inner):
    s1, s2 = channel_sums(cp, dy, cen, outer, C, inner, True)
    n = outer * C * inner
    launch(raw_function("channels", "bn_backward", dy.dtype), n,
           (dy, cen, s1, s2, inv_std, i32(n), i32(C), i32(inner), np.float64(outer * inner),
            dx))


def affine(x, s, b, y, outer, dim, inner):
    """y = x * s[c] + b[c] (s or b None to leave it out); y may be x."""
    n = outer * dim * inner
    launch(raw_function("channels", "affine", x.dtype), n,
           (x, s if s is not None else x, b if b is not None else x, i32(n), i32(dim),
            i32(inner), i32(s is not None), i32(b is not None), y))


def accumulate(sums, d):
    """d += sums (double per-channel sums) cast to d's type."""
    n = d.size
    launch(raw_function("channels", "accumulate", d.dtype), n, (sums, i32(n), _flat(d)))


__all__ = ["channel_sums", "bn_forward_train", "bn_forward_global", "bn_backward_train",
           "affine", "accumulate", "real"]
