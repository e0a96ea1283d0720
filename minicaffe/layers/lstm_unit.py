"""LSTMUnit: one LSTM time step, and the cell arithmetic the LSTM layer reuses at every step.

Bottoms c_prev (1, N, H), gates (1, N, 4H) holding the pre-activations in Caffe's order
i, f, o, g, and cont (1, N); tops c and h, both (1, N, H):

    i = sigmoid(i'),  f = cont * sigmoid(f'),  o = sigmoid(o'),  g = tanh(g')
    c = f * c_prev + i * g,       h = o * tanh(c)

Backward follows Caffe's lstm_unit_layer.cpp, including its f' gradient
dc_total * c_prev * f * (1 - f) with f already scaled by cont: exact for the usual 0/1
indicators. No gradient reaches cont (Caffe refuses one).
"""
from ..errors import ShapeError
from ..layer import Layer, register


def _sigmoid(xp, x):
    # tanh form: no overflow warning for large |x| (exp would overflow in float32)
    return 0.5 * xp.tanh(0.5 * x) + 0.5


def _activations(xp, gates, cont):
    h = gates.shape[-1] // 4
    i = _sigmoid(xp, gates[..., :h])
    f = cont[..., None] * _sigmoid(xp, gates[..., h:2 * h])
    o = _sigmoid(xp, gates[..., 2 * h:3 * h])
    g = xp.tanh(gates[..., 3 * h:])
    return i, f, o, g


def lstm_cell_forward(xp, c_prev, gates, cont):
    """(c, h) of one step; ``cont`` has the shape of c_prev without its last axis."""
    i, f, o, g = _activations(xp, gates, cont)
    c = f * c_prev + i * g
    return c, o * xp.tanh(c)


def lstm_cell_backward(xp, c_prev, gates, cont, c, dc, dh):
    """(dc_prev, dgates) of one step, given the step's output c and the diffs of c and h."""
    i, f, o, g = _activations(xp, gates, cont)
    tanh_c = xp.tanh(c)
    dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
    dgates = xp.concatenate([dc_total * g * i * (1 - i),
                             dc_total * c_prev * f * (1 - f),
                             dh * tanh_c * o * (1 - o),
                             dc_total * i * (1 - g * g)], axis=-1)
    return dc_total * f, dgates


@register("LSTMUnit")
class LSTMUnitLayer(Layer):
    exact_num_bottom = 3
    exact_num_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        c_prev, gates, cont = bottom
        n = c_prev.shape[1] if c_prev.num_axes > 1 else -1
        for k, b in enumerate(bottom):
            axes = 2 if k == 2 else 3
            if b.num_axes != axes or b.shape[0] != 1 or b.shape[1] != n:
                self.fail(f"bottom {k} must have {axes} axes, shape (1, N{', ...' * (k < 2)}) "
                          f"with N = {n} from c_prev; got {tuple(b.shape)}", ShapeError)
        self.hidden = c_prev.shape[2]
        if gates.shape[2] != 4 * self.hidden:
            self.fail(f"gates (bottom 1) must have 4 * {self.hidden} = {4 * self.hidden} values "
                      f"per instance (i, f, o, g), got {gates.shape[2]}", ShapeError)
        for t in top:
            t.reshape(tuple(c_prev.shape))

    def forward(self, bottom, top):
        xp = self.xp_of(bottom[0])
        c, h = lstm_cell_forward(xp, bottom[0].xdata, bottom[1].xdata, bottom[2].xdata)
        top[0].xdata[...] = c
        top[1].xdata[...] = h

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            self.fail("cannot backpropagate to the sequence indicators (bottom 2)")
        if not (propagate_down[0] or propagate_down[1]):
            return
        xp = self.xp_of(bottom[0])
        dc_prev, dgates = lstm_cell_backward(xp, bottom[0].xdata, bottom[1].xdata,
                                             bottom[2].xdata, top[0].xdata, top[0].xdiff,
                                             top[1].xdiff)
        if propagate_down[0]:
            bottom[0].xdiff[...] = dc_prev
        if propagate_down[1]:
            bottom[1].xdiff[...] = dgates
