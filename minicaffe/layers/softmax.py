"""Softmax (softmax_param.axis, default 1), computed with the max subtracted."""
from ..layer import Layer, register


def softmax3(xp, x, y):
    """y = softmax of x over axis 1 of (outer, C, inner) views; y may be x."""
    if x.size == 0:
        return      # y is empty too; max() of nothing would raise
    m = x.max(axis=1, keepdims=True)
    xp.subtract(x, m, out=y)
    xp.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)



@register("Softmax")
class SoftmaxLayer(Layer):
    """Softmax over softmax_param.axis (default 1), computed with the max subtracted."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        b = bottom[0]
        try:
            axis = b.canonical_axis_index(self.layer_param.softmax_param.axis)
        except IndexError:
            self.fail(f"softmax_param.axis {self.layer_param.softmax_param.axis} is out of "
                      f"range for bottom shape {tuple(b.shape)}")
        self.axis = axis
        self.dims = (b.count_range(0, axis), b.shape[axis], b.count_range(axis + 1))
        if top[0] is not b:
            top[0].reshape(b.shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        softmax3(xp, bottom[0].xdata.reshape(self.dims), top[0].xdata.reshape(self.dims))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        y = top[0].xdata.reshape(self.dims)
        dy = top[0].xdiff.reshape(self.dims)
        dx = bottom[0].xdiff.reshape(self.dims)
        # dx = (dy - <dy, y>) * y, the dot taken along the softmax axis (dx may be dy).
        dot = (dy * y).sum(axis=1, keepdims=True)
        xp.subtract(dy, dot, out=dx)
        dx *= y
