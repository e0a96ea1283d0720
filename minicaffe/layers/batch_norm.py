"""BatchNorm (batch_norm_param), BVLC Caffe semantics.

BatchNorm keeps between forward and backward only the centred input x - mean (one
activation-sized buffer) and per-channel vectors; its backward needs one activation-sized
temporary. Forward and backward never read the top's data, so running in place (top ==
bottom) gives the same results as running out of place. The arithmetic against per-channel
vectors is ``broadcast.Broadcast``'s.

On CuPy arrays (GPU mode) the layer runs the fused kernels of ``minicaffe.kernels.channels``
instead: the statistics in one pass and the moving averages and normalisation fused, no host
reads (global statistics included). On NumPy arrays with numba it runs the compiled kernels
of ``minicaffe.kernels.cpu_channels``.
"""
import numpy as np

from .. import backend, kernels
from ..kernels import cuda as _kernels
from ..blob import Blob
from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2
from .broadcast import Broadcast, same_layout
from .scratch import reuse


@register("BatchNorm")
class BatchNormLayer(Layer):
    """Normalise each channel (axis 1) over all other axes, as Caffe's BatchNorm.

    Parameter blobs (never learned): [C] running sum of means, [C] running sum of variances,
    [1] moving-average factor. Global statistics are sums / factor.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def default_param_spec(self, param_index):
        return caffe_pb2.ParamSpec(lr_mult=0, decay_mult=0)

    def layer_setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.use_global_stats = self.phase == caffe_pb2.TEST
        if p.HasField("use_global_stats"):
            self.use_global_stats = bool(p.use_global_stats)
        self.eps = float(p.eps)
        for i, spec in enumerate(self.layer_param.param):
            if spec.lr_mult != 0:
                self.fail(f"param {i} has lr_mult {spec.lr_mult:g}, but the batch statistics "
                          "are not learned parameters: give lr_mult 0 or no param at all")
        x = bottom[0]
        if x.num_axes < 1:
            self.fail(f"needs a bottom with at least 1 axis, got shape {tuple(x.shape)}")
        self.channels = 1 if x.num_axes == 1 else x.shape[1]
        C = self.channels
        if self.blobs:
            want = [C, C, 1]
            if len(self.blobs) != 3 or [b.count for b in self.blobs] != want:
                self.fail(f"expects 3 parameter blobs of sizes {want} (mean sum, variance sum, "
                          f"factor), got {[tuple(b.shape) for b in self.blobs]}")
        else:
            self.blobs = [Blob((C,)), Blob((C,)), Blob((1,))]
            for b in self.blobs:
                b.xdata[...] = 0
        # The statistics receive no gradient; the Net overrides this from the ParamSpecs, and
        # backward never writes into these diffs whatever it says.
        self.param_propagate_down = [False] * 3
        self._bc = None
        self._centered = None
        self._inv_std = None
        self._inv_std_b = None
        self._last_global = None
        self._last_fused = False
        self._last_compiled = False
        self._stats = None

    def reshape(self, bottom, top):
        x = bottom[0]
        shape = x.shape
        if x.num_axes >= 2 and shape[1] != self.channels:
            self.fail(f"bottom has {shape[1]} channels (shape {tuple(shape)}), but the layer "
                      f"was set up for {self.channels}", cls=ShapeError)
        if x.num_axes < 1:
            self.fail(f"needs a bottom with at least 1 axis, got shape {tuple(shape)}",
                      cls=ShapeError)
        if top[0] is not x:
            top[0].reshape(shape)
        n = shape[0]
        C = self.channels
        inner = x.count // (n * C) if n * C else 0
        data = x.xdata
        xp = backend.get_array_module(data)
        if not same_layout(self._bc, n, C, inner, xp, data.dtype):
            self._bc = Broadcast(n, C, inner, xp, data.dtype)
            self._centered = None

    def _stats_vectors(self, xp):
        """Global mean and variance from the stored sums (factor 0 gives zeros)."""
        factor = float(self.blobs[2].xdata.reshape(-1)[0])
        s = 0.0 if factor == 0 else 1.0 / factor
        mean = xp.asarray(self.blobs[0].xdata, dtype=np.float64).reshape(-1) * s
        var = xp.asarray(self.blobs[1].xdata, dtype=np.float64).reshape(-1) * s
        return mean, var

    def _fused(self, x):
        return backend.fused_kernels(self._bc.xp) and \
            _kernels.supported(x, *(b.xdata for b in self.blobs))

    def _forward_fused(self, x, y):
        bc = self._bc
        cp = bc.xp
        C = bc.dim
        stats = self._stats
        if stats is None or stats.shape != (2, C) or stats.dtype != x.dtype:
            stats = self._stats = cp.empty((2, C), dtype=x.dtype)
        blobs = [b.xdata for b in self.blobs]
        if self.use_global_stats:
            _kernels.channels.bn_forward_global(cp, x, y, blobs, bc.outer, C, bc.inner,
                                                self.eps, stats)
            self._centered = None
        else:
            self._centered = cen = reuse(self._centered, bc.shape, x)
            _kernels.channels.bn_forward_train(cp, x, y, cen, blobs, bc.outer, C, bc.inner,
                                               self.eps, self.moving_average_fraction, stats)
        self._last_global = self.use_global_stats
        self._last_fused = True

    def _compiled(self):
        """The numba kernels of ``minicaffe.kernels.cpu_channels`` for NumPy arrays, or None."""
        return kernels.get("channels", np) if self._bc.xp is np else None

    def _forward_compiled(self, fast, x, y):
        bc = self._bc
        x3 = x.reshape(bc.outer, bc.dim, bc.inner)
        y3 = y.reshape(x3.shape)
        if self.use_global_stats:
            mean, var = self._stats_vectors(np)
            self._centered = cen3 = None
        else:
            mean, var = np.empty(bc.dim), np.empty(bc.dim)
            fast.stats(x3, mean, var)
            self._update_moving_average(mean, var, bc.outer * bc.inner)
            self._centered = reuse(self._centered, bc.shape, x)
            cen3 = self._centered.reshape(x3.shape)
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        fast.normalize(x3, mean, self._inv_std, cen3, y3)

    def forward(self, bottom, top):
        bc = self._bc
        x = bottom[0].xdata
        xp = bc.xp
        if bc.count and self._fused(x):
            return self._forward_fused(x, top[0].xdata)
        self._last_fused = False
        fast = self._compiled() if bc.count else None
        self._last_compiled = fast is not None
        if fast is not None:
            self._forward_compiled(fast, x, top[0].xdata)
            self._last_global = self.use_global_stats
            return
        X = bc.view(x)
        Y = bc.view(top[0].xdata)
        if bc.count == 0:
            return
        if self.use_global_stats:
            mean, var = self._stats_vectors(xp)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            xp.subtract(X, bc.vec(mean, 0), out=Y)
            self._inv_std_b = bc.vec(inv_std, 1)
            xp.multiply(Y, self._inv_std_b, out=Y)
            self._centered = None           # global statistics keep no activation buffer
        else:
            m = bc.outer * bc.inner
            mean = bc.sum(X).astype(np.float64) / m
            self._centered = cen = reuse(self._centered, bc.shape, x)
            xp.subtract(X, bc.vec(mean, 0), out=cen)
            var = bc.dot(cen, cen).astype(np.float64) / m
            self._update_moving_average(mean, var, m)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            self._inv_std_b = bc.vec(inv_std, 1)
            xp.multiply(cen, self._inv_std_b, out=Y)
        self._inv_std = inv_std
        self._last_global = self.use_global_stats

    def _update_moving_average(self, mean, var, m):
        lam = self.moving_average_fraction
        mean_sum, var_sum, factor = (b.xdata.reshape(-1) for b in self.blobs)
        factor *= lam
        factor += 1
        correction = m / (m - 1.0) if m > 1 else 1.0
        mean_sum *= lam
        mean_sum += mean.astype(mean_sum.dtype)
        var_sum *= lam
        var_sum += (correction * var).astype(var_sum.dtype)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or self._bc.count == 0:
            return
        if self._last_global is None:
            self.fail("backward called before forward")
        bc = self._bc
        xp = bc.xp
        if self._last_fused:
            dy, dx = top[0].xdiff, bottom[0].xdiff
            inv_std = self._stats[1]
            if self._last_global:
                _kernels.channels.affine(dy, inv_std, None, dx, bc.outer, bc.dim, bc.inner)
            else:
                _kernels.channels.bn_backward_train(xp, dy, self._centered, dx, inv_std,
                                                    bc.outer, bc.dim, bc.inner)
            return
        if self._last_compiled:
            fast = kernels.get("channels", np)
            shape = (bc.outer, bc.dim, bc.inner)
            dy3, dx3 = top[0].xdiff.reshape(shape), bottom[0].xdiff.reshape(shape)
            if self._last_global:    # dx = (dy - 0) / sqrt(var + eps)
                fast.normalize(dy3, np.zeros(bc.dim), self._inv_std, None, dx3)
            else:
                fast.backward(dy3, self._centered.reshape(shape), self._inv_std, dx3)
            return
        dy = bc.view(top[0].xdiff)
        dx = bc.view(bottom[0].xdiff)
        if self._last_global:
            # mean and variance are constants: dx = dy / sqrt(var + eps)
            xp.multiply(dy, self._inv_std_b, out=dx)
            return
        # With y = (x - mean) * inv_std and c = x - mean (kept from forward):
        #   dx = inv_std * (dy - mean(dy)) - c * inv_std^3 * mean(dy * c)
        cen = self._centered
        m = bc.outer * bc.inner
        inv_std = self._inv_std
        mean_dy = bc.sum(dy).astype(np.float64) / m
        k = bc.dot(dy, cen).astype(np.float64) * (inv_std ** 3 / m)
        tmp = xp.empty(bc.shape, dtype=cen.dtype)      # the one activation-sized temporary
        xp.multiply(cen, bc.vec(k, 2), out=tmp)
        xp.subtract(dy, bc.vec(mean_dy, 0), out=dx)   # dx may be dy (in place): elementwise
        xp.multiply(dx, self._inv_std_b, out=dx)
        xp.subtract(dx, tmp, out=dx)
