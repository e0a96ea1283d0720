"""InnerProduct (inner_product_param), a fully connected layer, and Embed (embed_param), its
lookup-table counterpart for integer inputs.

The bottom is read as a matrix X (M, K) with M = count(0, axis) and K = count(axis):

    Y = X W^T + b        (W stored (N, K); with ``transpose: true`` stored (K, N) and Y = X W)
    dW += dY^T X  (or X^T dY),   db += sum over rows of dY,   dX = dY W  (or dY W^T)

The top has the bottom's leading axes followed by N = num_output.

Embed: a table W (input_dim, num_output) indexed by the integer values of the bottom, plus an
optional bias; gradients reach the parameters only.
"""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register
from .row_selection import scatter_add_rows


@register("InnerProduct")
class InnerProductLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            self.fail("num_output must be positive")
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = self._axis(bottom[0])
        self.k = bottom[0].count_range(self.axis)
        weight_shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        specs = [(weight_shape, p.weight_filler)]
        if self.bias_term:
            specs.append(((self.num_output,), p.bias_filler))
        self.init_param_blobs(specs)

    def _axis(self, blob):
        axis = self.layer_param.inner_product_param.axis
        try:
            return blob.canonical_axis_index(axis)
        except IndexError:
            self.fail(f"axis {axis} is out of range for bottom shape {tuple(blob.shape)}")

    def reshape(self, bottom, top):
        x = bottom[0]
        if top[0] is x:
            self.fail("cannot run in place")
        axis = self._axis(x)
        k = x.count_range(axis)
        if k != self.k:
            self.fail(f"input size incompatible with inner product parameters: bottom shape "
                      f"{tuple(x.shape)} has {k} inputs per row from axis {axis}, the weights "
                      f"{tuple(self.blobs[0].shape)} expect {self.k}", ShapeError)
        self.m = x.count_range(0, axis)
        top[0].reshape(tuple(x.shape[:axis]) + (self.num_output,))

    def _weight_nk(self):
        """W as an (N, K)-shaped array (a transposed view when stored (K, N))."""
        w = self.blobs[0].xdata
        return w.T if self.transpose else w

    def forward(self, bottom, top):
        xp = self.xp_of(bottom[0])
        x = bottom[0].xdata.reshape(self.m, self.k)
        y = top[0].xdata.reshape(self.m, self.num_output)
        xp.matmul(x, self._weight_nk().T, out=y)
        if self.bias_term:
            y += self.blobs[1].xdata

    def backward(self, top, propagate_down, bottom):
        xp = self.xp_of(top[0])
        dy = top[0].xdiff.reshape(self.m, self.num_output)
        x = bottom[0].xdata.reshape(self.m, self.k)
        if self.param_propagate_down[0]:
            dw = self.blobs[0].xdiff
            dw += xp.matmul(x.T, dy) if self.transpose else xp.matmul(dy.T, x)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].xdiff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            xp.matmul(dy, self._weight_nk(), out=bottom[0].xdiff.reshape(self.m, self.k))


@register("Embed")
class EmbedLayer(Layer):
    """top = W[index] (+ b) for every value of the bottom, read as an integer index in
    [0, input_dim); top shape = bottom shape + (num_output,). W is (input_dim, num_output)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.embed_param
        self.num_output = int(p.num_output)
        self.input_dim = int(p.input_dim)
        if self.num_output <= 0:
            self.fail("embed_param.num_output must be positive")
        if self.input_dim <= 0:
            self.fail("embed_param.input_dim must be positive")
        self.bias_term = bool(p.bias_term)
        specs = [((self.input_dim, self.num_output), p.weight_filler)]
        if self.bias_term:
            specs.append(((self.num_output,), p.bias_filler))
        self.init_param_blobs(specs)

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        self.m = bottom[0].count
        top[0].reshape(tuple(bottom[0].shape) + (self.num_output,))

    def _indices(self, bottom):
        xp = bottom[0].xp
        x = bottom[0].xdata.reshape(-1)
        idx = x.astype(np.int64)              # truncation, as Caffe's static_cast<int>
        if self.m:
            bad = (idx < 0) | (idx >= self.input_dim)
            if bool(bad.any()):
                first = float(x[int(xp.argmax(bad))])
                self.fail(f"index {first:g} in the bottom is out of range [0, "
                          f"{self.input_dim - 1}] (input_dim {self.input_dim})")
            frac = idx != x
            if bool(frac.any()):
                first = float(x[int(xp.argmax(frac))])
                self.fail(f"bottom value {first:g} is not an integer index")
        return idx

    def forward(self, bottom, top):
        xp = bottom[0].xp
        idx = self._indices(bottom)
        self._idx = idx
        y = top[0].xdata.reshape(self.m, self.num_output)
        xp.take(self.blobs[0].xdata, idx, axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].xdata

    def allow_force_backward(self, bottom_index):
        return False

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.fail("cannot backpropagate to its input (the bottom holds indices)")
        xp = bottom[0].xp
        dy = top[0].xdiff.reshape(self.m, self.num_output)
        if self.param_propagate_down[0]:
            scatter_add_rows(xp, self.blobs[0].xdiff, self._indices(bottom), dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].xdiff[...] += dy.sum(axis=0)
