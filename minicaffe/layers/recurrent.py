"""RNN and LSTM (recurrent_param), computed step by step as BVLC Caffe's unrolled nets do.

Bottoms: x (T, N, ...), cont (T, N) and optionally x_static (N, ...); with ``expose_hidden``
also the initial states (1, N, H): h_0 for RNN, h_0 and c_0 for LSTM. Tops: the outputs
(T, N, H) and, with ``expose_hidden``, the final states h_T (and c_T). H = num_output.

Per step t, with h_{t-1} scaled by cont_t so that a 0 starts a new sequence:

    RNN:   h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h + W_xh_static x_static)
           o_t = tanh(W_ho h_t + b_o)                        (the top holds o)
    LSTM:  gates_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c + W_xc_static x_static
           (c_t, h_t) = LSTMUnit(c_{t-1}, gates_t, cont_t)   (the top holds h)

The parameter blobs are those of Caffe's unrolled net, in its order, so .caffemodel weights
load: RNN W_xh (H, D), b_h (H), [W_xh_static (H, S)], W_hh (H, H), W_ho (H, H), b_o (H);
LSTM W_xc (4H, D), b_c (4H), [W_xc_static (4H, S)], W_hc (4H, H). D = count of x from axis
2, S = count of x_static from axis 1.

Without ``expose_hidden`` a forward starts from the previous forward's final state (zeros
at first), as Caffe's layer does. Backward goes through time into x, x_static and, where
exposed, h_0/c_0 (taking the h_T/c_T top diffs into account); Caffe itself leaves h_0/c_0
without a gradient there. cont gets none (Caffe refuses it).
"""
import math

from ..errors import ShapeError
from ..layer import Layer, register
from .lstm_unit import lstm_cell_backward, lstm_cell_forward


def _rows(a):
    # Sizes spelt out: -1 cannot be inferred when an axis is 0 (an empty batch).
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def _per_step(arr, b, t, n):
    """(T, N, features) view of ``arr``, the data or diff of Blob ``b``."""
    return arr.reshape(t, n, b.count_range(2))


def _per_item(arr, b, n):
    """(N, features) view of ``arr``, the data or diff of Blob ``b``."""
    return arr.reshape(n, b.count_range(1))


class _RecurrentLayer(Layer):
    """The parts RNN and LSTM share: bottoms, the input projections, state carrying."""
    min_num_bottom = 2
    min_num_top = 1
    state_names = ("h",)
    gates_per_unit = 1

    # -- set-up ------------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        p = self.layer_param.recurrent_param
        self.hidden = int(p.num_output)
        if self.hidden <= 0:
            self.fail("recurrent_param.num_output must be positive")
        self.expose = bool(p.expose_hidden)
        exposed = len(self.state_names) if self.expose else 0
        if len(bottom) not in (2 + exposed, 3 + exposed):
            self.fail(f"takes x, cont, an optional x_static{' and the initial states' * self.expose}"
                      f": {2 + exposed} or {3 + exposed} bottoms, got {len(bottom)}")
        if len(top) != 1 + exposed:
            self.fail(f"takes {1 + exposed} top blob(s), got {len(top)}")
        self.static = len(bottom) == 3 + exposed
        x = bottom[0]
        if x.num_axes < 2:
            self.fail(f"bottom 0 must have at least 2 axes (#timesteps, #streams, ...), got "
                      f"shape {tuple(x.shape)}", ShapeError)
        self.steps = x.shape[0]
        gh = self.gates_per_unit * self.hidden
        specs = [((gh, x.count_range(2)), p.weight_filler), ((gh,), p.bias_filler)]
        if self.static:
            specs.append(((gh, bottom[2].count_range(1)), p.weight_filler))
        specs += self.step_param_specs(p)
        self.init_param_blobs(specs)
        self.first_step_param = 3 if self.static else 2
        self.carried = None

    def step_param_specs(self, p):
        raise NotImplementedError

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reset(self):
        """Forget the carried state: the next forward starts from zeros (Caffe's Reset)."""
        self.carried = None

    def reshape(self, bottom, top):
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2 or x.shape[0] != self.steps:
            self.fail(f"input number of timesteps changed: bottom 0 has shape {tuple(x.shape)}, "
                      f"the layer was set up for {self.steps}", ShapeError)
        t, n = x.shape[0], x.shape[1]
        if tuple(cont.shape) != (t, n):
            self.fail(f"cont (bottom 1) must have shape (T, N) = {(t, n)}, got "
                      f"{tuple(cont.shape)}", ShapeError)
        if self.static and (bottom[2].num_axes < 1 or bottom[2].shape[0] != n):
            self.fail(f"x_static (bottom 2) must have N = {n} rows, got shape "
                      f"{tuple(bottom[2].shape)}", ShapeError)
        state_shape = (1, n, self.hidden)
        for k, b in enumerate(self._state_bottoms(bottom)):
            if tuple(b.shape) != state_shape:
                self.fail(f"bottom {len(bottom) - len(self.state_names) + k} must match the "
                          f"hidden state shape {state_shape}, got {tuple(b.shape)}", ShapeError)
        top[0].reshape((t, n, self.hidden))
        for tp in top[1:]:
            tp.reshape(state_shape)

    def _state_bottoms(self, bottom):
        return bottom[len(bottom) - len(self.state_names):] if self.expose else []

    # -- forward / backward --------------------------------------------------------------------
    def forward(self, bottom, top):
        xp = self.xp_of(bottom[0])
        t, n = bottom[0].shape[0], bottom[0].shape[1]
        x = _per_step(bottom[0].xdata, bottom[0], t, n)
        proj = xp.matmul(x, self.blobs[0].xdata.T) + self.blobs[1].xdata
        if self.static:
            proj += xp.matmul(_per_item(bottom[2].xdata, bottom[2], n), self.blobs[2].xdata.T)
        if self.expose:
            states = [b.xdata[0] for b in self._state_bottoms(bottom)]
        elif self.carried is not None and self.carried[0].shape == (n, self.hidden):
            states = self.carried
        else:
            states = [xp.zeros((n, self.hidden), dtype=x.dtype) for _ in self.state_names]
        out, final = self.run_steps(xp, proj, bottom[1].xdata, states)
        top[0].xdata[...] = out
        for tp, s in zip(top[1:], final):
            tp.xdata[0] = s
        self.carried = [s.copy() for s in final]

    def backward(self, top, propagate_down, bottom):
        xp = self.xp_of(bottom[0])
        t, n = bottom[0].shape[0], bottom[0].shape[1]
        if self.expose:
            dfinal = [tp.xdiff[0] for tp in top[1:]]
        else:
            dfinal = [xp.zeros((n, self.hidden), dtype=top[0].dtype) for _ in self.state_names]
        dproj, dstates = self.run_steps_backward(xp, top[0].xdiff, bottom[1].xdata, dfinal)
        x = _per_step(bottom[0].xdata, bottom[0], t, n)
        self._accumulate(0, xp.matmul(_rows(dproj).T, _rows(x)))
        self._accumulate(1, _rows(dproj).sum(axis=0))
        if propagate_down[0]:
            _per_step(bottom[0].xdiff, bottom[0], t, n)[...] = xp.matmul(dproj, self.blobs[0].xdata)
        if self.static:
            dstatic = dproj.sum(axis=0)  # x_static feeds every step
            xs = _per_item(bottom[2].xdata, bottom[2], n)
            self._accumulate(2, xp.matmul(dstatic.T, xs))
            if propagate_down[2]:
                _per_item(bottom[2].xdiff, bottom[2], n)[...] = xp.matmul(dstatic, self.blobs[2].xdata)
        first = len(bottom) - len(self.state_names)
        for k, (b, d) in enumerate(zip(self._state_bottoms(bottom), dstates)):
            if propagate_down[first + k]:
                b.xdiff[0] = d

    def _accumulate(self, k, grad):
        if self.param_propagate_down[k]:
            self.blobs[k].xdiff[...] += grad

    def run_steps(self, xp, proj, cont, states):
        """(top 0 data, final states) from the projected inputs (T, N, G*H)."""
        raise NotImplementedError

    def run_steps_backward(self, xp, dout, cont, dfinal):
        """(d proj, d initial states), accumulating the step parameters' gradients."""
        raise NotImplementedError


@register("RNN")
class RNNLayer(_RecurrentLayer):
    max_num_bottom = 4

    def step_param_specs(self, p):
        h = self.hidden
        return [((h, h), p.weight_filler), ((h, h), p.weight_filler), ((h,), p.bias_filler)]

    def run_steps(self, xp, proj, cont, states):
        k = self.first_step_param
        w_hh, w_ho, b_o = (b.xdata for b in self.blobs[k:k + 3])
        h = states[0]
        hs = xp.empty_like(proj)
        conted = xp.empty_like(proj)
        for t in range(proj.shape[0]):
            conted[t] = cont[t][:, None] * h
            h = hs[t] = xp.tanh(xp.matmul(conted[t], w_hh.T) + proj[t])
        out = xp.tanh(xp.matmul(hs, w_ho.T) + b_o)
        self._cache = (hs, conted, out)
        return out, [h]

    def run_steps_backward(self, xp, dout, cont, dfinal):
        k = self.first_step_param
        w_hh, w_ho = self.blobs[k].xdata, self.blobs[k + 1].xdata
        hs, conted, out = self._cache
        dz = dout * (1 - out * out)
        self._accumulate(k + 1, xp.matmul(_rows(dz).T, _rows(hs)))
        self._accumulate(k + 2, _rows(dz).sum(axis=0))
        dh_out = xp.matmul(dz, w_ho)
        dproj = xp.empty_like(hs)
        dh = dfinal[0]
        for t in range(hs.shape[0] - 1, -1, -1):
            da = dproj[t] = (dh_out[t] + dh) * (1 - hs[t] * hs[t])
            dh = cont[t][:, None] * xp.matmul(da, w_hh)
        self._accumulate(k, xp.matmul(_rows(dproj).T, _rows(conted)))
        return dproj, [dh]


@register("LSTM")
class LSTMLayer(_RecurrentLayer):
    max_num_bottom = 5
    state_names = ("h", "c")
    gates_per_unit = 4

    def step_param_specs(self, p):
        return [((4 * self.hidden, self.hidden), p.weight_filler)]

    def run_steps(self, xp, proj, cont, states):
        w_hc = self.blobs[self.first_step_param].xdata
        h, c = states
        t_len, n, _ = proj.shape
        hs = xp.empty((t_len, n, self.hidden), dtype=proj.dtype)
        cs = xp.empty((t_len + 1, n, self.hidden), dtype=proj.dtype)  # cs[0] = c_0
        conted = xp.empty_like(hs)
        gates = xp.empty_like(proj)
        cs[0] = c
        for t in range(t_len):
            conted[t] = cont[t][:, None] * h
            gates[t] = xp.matmul(conted[t], w_hc.T) + proj[t]
            cs[t + 1], h = lstm_cell_forward(xp, cs[t], gates[t], cont[t])
            hs[t] = h
        self._cache = (cs, conted, gates)
        return hs, [h, cs[t_len]]

    def run_steps_backward(self, xp, dout, cont, dfinal):
        k = self.first_step_param
        w_hc = self.blobs[k].xdata
        cs, conted, gates = self._cache
        dproj = xp.empty_like(gates)
        dh, dc = dfinal
        for t in range(gates.shape[0] - 1, -1, -1):
            dc, dproj[t] = lstm_cell_backward(xp, cs[t], gates[t], cont[t], cs[t + 1], dc,
                                              dout[t] + dh)
            dh = cont[t][:, None] * xp.matmul(dproj[t], w_hc)
        self._accumulate(k, xp.matmul(_rows(dproj).T, _rows(conted)))
        return dproj, [dh, dc]
