"""The base of the elementwise ("neuron") layers: one bottom, one top of the same shape, in
place allowed.

In place (top[0] is bottom[0]) the input is overwritten by the forward pass. Layers whose
backward can be written in terms of the output (ReLU, Sigmoid, TanH, ELU, Exp, Swish, Dropout)
need nothing more; the others (PReLU, Power, Log, BNLL, Clip) keep a copy of the input, but
only when they run in place (Caffe does this for PReLU; AbsVal refuses in place as Caffe does).

Most of them back-propagate dx = dy * f'(x): such a layer gives f' as ``derivative`` and
inherits ``backward``.
"""
from ..layer import Layer
from .scratch import reuse


class NeuronLayer(Layer):
    """Base of the elementwise layers: sizes the top like the bottom."""
    exact_num_bottom = 1
    exact_num_top = 1
    # True where backward needs the input itself: an in-place run then saves a copy of it.
    keeps_input = False
    _saved = None

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        elif self.keeps_input:
            x = bottom[0].xdata
            self._saved = reuse(self._saved, x.shape, x)

    def _forward_input(self, bottom, top):
        """The input for forward; saves a copy first when running in place and it is needed."""
        x = bottom[0].xdata
        if self.keeps_input and top[0] is bottom[0]:
            self._saved[...] = x
        return x

    def _backward_input(self, bottom, top):
        """The forward input as backward sees it (the saved copy when run in place)."""
        if self.keeps_input and top[0] is bottom[0]:
            return self._saved
        return bottom[0].xdata

    def derivative(self, xp, bottom, top):
        """f' at the forward input, elementwise (an array, or a scalar where constant)."""
        raise NotImplementedError(f"{self.type} layer has no backward")

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        # dx may be dy (in place): the product is elementwise.
        xp.multiply(top[0].xdiff, self.derivative(xp, bottom, top), out=bottom[0].xdiff)


def sigmoid(xp, x, out=None):
    """Logistic function written through tanh (no overflow for large |x|), as Caffe does."""
    out = xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out
