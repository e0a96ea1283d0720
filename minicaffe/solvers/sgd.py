"""SGD and the update rules built on it, in Caffe's order (rates: ``lr_policy``).

    rate = policy(iter); clip gradients (global L2 norm > clip_gradients); then for every
    learnable parameter: normalise by iter_size, regularise (L2: + decay * data, L1:
    + decay * sign(data), decay = weight_decay * decay_mult), compute the step with
    local_rate = rate * lr_mult; then data -= diff for all parameters; iter += 1.

The other types (Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) only change the step. A
``.solverstate`` (``snapshot_files``) holds the history blobs in Caffe's layout: one per
parameter, except AdaDelta and Adam which store 2 x n (squared gradients / first moments for
the n parameters, then squared updates / second moments).

On CuPy arrays each parameter's normalise + regularise + step + ``data -= diff`` is one fused
kernel (``minicaffe.kernels.cuda.solver``); the NumPy expressions below are the CPU path.
"""
import logging
import math

import numpy as np

from .. import backend
from ..kernels import cuda as _cuda
from .log_lines import cpp_float
from .lr_policy import LR_POLICIES, learning_rate, lr_policy_problem
from ..net_debug_info import update_debug_info
from .snapshot_files import (learned_net_path, read_solver_state, snapshot_extensions,
                             write_solver_state)
from .solver import Solver

log = logging.getLogger("minicaffe")


class SGDSolver(Solver):
    """Stochastic gradient descent with momentum; the base of the other update rules."""
    type = "SGD"
    history_sets = 1   # history blobs per learnable parameter in the solverstate
    fused_kind = "sgd"  # the fused CUDA update (minicaffe.kernels.cuda.solver)
    takes_momentum = True

    def __init__(self, param, source=None):
        super().__init__(param, source)
        self._check_update_param()
        self.pre_solve()

    def _check_update_param(self):
        p = self.param
        problem = lr_policy_problem(p)
        if problem:
            raise self._error(problem)
        if p.regularization_type not in ("L1", "L2"):
            raise self._error(f"unknown regularization_type '{p.regularization_type}' "
                              "(L1 or L2)")
        if not self.takes_momentum and p.momentum != 0:
            raise self._error(f"Momentum cannot be used with {self.type}.")

    def pre_solve(self):
        learnable = self.net.learnable_params
        self._params = [b for b, _ in learnable]
        self._lr_mult = [float(s.lr_mult) for _, s in learnable]
        self._decay_mult = [float(s.decay_mult) for _, s in learnable]
        self._xp = [backend.get_array_module(b.xdata) for b in self._params]
        self.history = [xp.zeros_like(b.xdata) for _ in range(self.history_sets)
                        for b, xp in zip(self._params, self._xp)]
        self._update = [xp.zeros_like(b.xdata) for b, xp in zip(self._params, self._xp)]
        self._temp = [xp.zeros_like(b.xdata) for b, xp in zip(self._params, self._xp)]

    def _move_state(self, xp):
        def move(a):
            return xp.asarray(backend.to_numpy(a)) if xp is not np else backend.to_numpy(a)
        self.history = [move(h) for h in self.history]
        self._update = [move(u) for u in self._update]
        self._temp = [move(t) for t in self._temp]
        self._xp = [xp] * len(self._params)

    # -- learning rate -------------------------------------------------------------------------
    def get_learning_rate(self):
        """The rate of this iteration under ``lr_policy``; "step" and "multistep" advance
        ``current_step``."""
        if self.param.lr_policy not in LR_POLICIES:
            raise self._error(f"unknown lr_policy '{self.param.lr_policy}'")
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    # -- update --------------------------------------------------------------------------------
    def apply_update(self):
        p = self.param
        rate = self.get_learning_rate()
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, cpp_float(rate))
        self.clip_gradients()
        debug = self.net.debug_info   # the fused update leaves no diff to show
        if self._params and not debug and backend.fused_kernels(self._xp[0]) and \
                _cuda.supported(*(b.xdata for b in self._params)):
            for i in range(len(self._params)):
                self._fused_update(i, rate)
            return
        for i in range(len(self._params)):
            self.normalize(i)
            self.regularize(i)
            self.compute_update_value(i, rate)
        if debug:
            update_debug_info(self.net)
        for b in self._params:
            data = b.xdata
            data -= b.xdiff

    def _fused_scalars(self, i, rate):
        """Arguments of the fused update for parameter ``i`` (see kernels.cuda.solver)."""
        p = self.param
        return dict(iter_scale=1.0 / p.iter_size, decay=p.weight_decay * self._decay_mult[i],
                    l1=p.regularization_type == "L1", lr=rate * self._lr_mult[i],
                    momentum=p.momentum, m2=0.0, delta=p.delta)

    def _fused_update(self, i, rate):
        b = self._params[i]
        n = len(self._params)
        h2 = self.history[n + i] if self.history_sets == 2 else None
        _cuda.solver.update(self.fused_kind, b.xdiff, b.xdata, self.history[i], h2,
                            **self._fused_scalars(i, rate))

    def clip_gradients(self):
        clip = self.param.clip_gradients
        if clip < 0:
            return
        sumsq = 0.0
        for b, xp in zip(self._params, self._xp):
            d = b.xdiff.ravel()
            if xp is np:
                sumsq += float(xp.dot(d, d))
            else:                      # summed on the device, one read below
                sumsq = sumsq + xp.dot(d, d).astype(np.float64)
        norm = math.sqrt(backend.to_float(sumsq))
        if norm > clip:
            scale = clip / norm
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale "
                     "factor %s", cpp_float(norm), cpp_float(clip), cpp_float(scale))
            for b in self._params:
                d = b.xdiff
                d *= scale

    def normalize(self, i):
        if self.param.iter_size != 1:
            d = self._params[i].xdiff
            d *= 1.0 / self.param.iter_size

    def regularize(self, i):
        local_decay = self.param.weight_decay * self._decay_mult[i]
        if not local_decay:
            return
        b, tmp, xp = self._params[i], self._temp[i], self._xp[i]
        if self.param.regularization_type == "L2":
            xp.multiply(b.xdata, local_decay, out=tmp)
        else:
            xp.sign(b.xdata, out=tmp)
            tmp *= local_decay
        d = b.xdiff
        d += tmp

    def compute_update_value(self, i, rate):
        """SGD: history = momentum * history + local_rate * diff; diff = history."""
        g, h, tmp = self._params[i].xdiff, self.history[i], self._temp[i]
        self._xp[i].multiply(g, rate * self._lr_mult[i], out=tmp)
        h *= self.param.momentum
        h += tmp
        g[...] = h

    # -- solver state --------------------------------------------------------------------------
    def snapshot_solver_state(self, model_file):
        state_file = self._snapshot_filename(snapshot_extensions(self.param)[1])
        write_solver_state(state_file, self.iter, self.current_step, model_file, self.history)
        return state_file

    def restore(self, state_file):
        """Continue from a .solverstate: iteration, weights (its learned_net) and history."""
        state, arrays = read_solver_state(state_file, self.history, self.type)
        if state.learned_net:
            self.net.copy_from(learned_net_path(state_file, state.learned_net))
        self.iter = state.iter
        self.current_step = state.current_step
        log.info("SGDSolver: restoring history")
        for h, arr in zip(self.history, arrays):
            h[...] = backend.get_array_module(h).asarray(arr)


class NesterovSolver(SGDSolver):
    """Nesterov momentum: diff = (1 + momentum) * history_new - momentum * history_old."""
    type = "Nesterov"
    fused_kind = "nesterov"

    def compute_update_value(self, i, rate):
        g, h, prev, tmp = self._params[i].xdiff, self.history[i], self._update[i], self._temp[i]
        momentum = self.param.momentum
        prev[...] = h
        self._xp[i].multiply(g, rate * self._lr_mult[i], out=tmp)
        h *= momentum
        h += tmp
        prev *= -momentum
        self._xp[i].multiply(h, 1.0 + momentum, out=g)
        g += prev


class AdaGradSolver(SGDSolver):
    """history += diff^2; diff = local_rate * diff / (sqrt(history) + delta)."""
    type = "AdaGrad"
    fused_kind = "adagrad"
    takes_momentum = False

    def compute_update_value(self, i, rate):
        xp, g, h, upd = self._xp[i], self._params[i].xdiff, self.history[i], self._update[i]
        xp.multiply(g, g, out=upd)
        h += upd
        _divide_by_root(xp, g, h, upd, self.param.delta, rate * self._lr_mult[i])


class RMSPropSolver(SGDSolver):
    """history = rms_decay * history + (1 - rms_decay) * diff^2;
    diff = local_rate * diff / (sqrt(history) + delta)."""
    type = "RMSProp"
    fused_kind = "rmsprop"
    takes_momentum = False

    def _fused_scalars(self, i, rate):
        d = super()._fused_scalars(i, rate)
        d["m2"] = self.param.rms_decay
        return d

    def _check_update_param(self):
        super()._check_update_param()
        if not 0 <= self.param.rms_decay < 1:
            raise self._error(f"rms_decay should lie between 0 and 1, got {self.param.rms_decay}")

    def compute_update_value(self, i, rate):
        xp, g, h, upd = self._xp[i], self._params[i].xdiff, self.history[i], self._update[i]
        decay = self.param.rms_decay
        xp.multiply(g, g, out=upd)
        upd *= 1.0 - decay
        h *= decay
        h += upd
        _divide_by_root(xp, g, h, upd, self.param.delta, rate * self._lr_mult[i])


class AdaDeltaSolver(SGDSolver):
    """Zeiler's AdaDelta with Caffe's local_rate factor. History: n squared-gradient
    averages, then n squared-update averages."""
    type = "AdaDelta"
    history_sets = 2
    fused_kind = "adadelta"

    def compute_update_value(self, i, rate):
        b, xp = self._params[i], self._xp[i]
        g, upd, tmp = b.xdiff, self._update[i], self._temp[i]
        h_grad, h_upd = self.history[i], self.history[len(self._params) + i]
        momentum, delta = self.param.momentum, self.param.delta
        xp.multiply(g, g, out=upd)
        upd *= 1.0 - momentum
        h_grad *= momentum
        h_grad += upd
        xp.add(h_upd, delta, out=upd)
        xp.add(h_grad, delta, out=tmp)
        upd /= tmp
        xp.sqrt(upd, out=upd)
        g *= upd
        xp.multiply(g, g, out=upd)
        upd *= 1.0 - momentum
        h_upd *= momentum
        h_upd += upd
        g *= rate * self._lr_mult[i]


class AdamSolver(SGDSolver):
    """Kingma & Ba's Adam: m, v moving averages (history: n first moments, then n second
    moments); diff = local_rate * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta),
    t = iter + 1."""
    type = "Adam"
    history_sets = 2
    fused_kind = "adam"

    def _fused_scalars(self, i, rate):
        d = super()._fused_scalars(i, rate)
        p = self.param
        t = self.iter + 1
        correction = math.sqrt(1.0 - p.momentum2 ** t) / (1.0 - p.momentum ** t)
        d["lr"] = rate * self._lr_mult[i] * correction
        d["m2"] = p.momentum2
        return d

    def compute_update_value(self, i, rate):
        b, xp = self._params[i], self._xp[i]
        g, tmp = b.xdiff, self._temp[i]
        m, v = self.history[i], self.history[len(self._params) + i]
        beta1, beta2 = self.param.momentum, self.param.momentum2
        t = self.iter + 1
        correction = math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        xp.multiply(g, 1.0 - beta1, out=tmp)
        m *= beta1
        m += tmp
        xp.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v *= beta2
        v += tmp
        xp.sqrt(v, out=tmp)
        tmp += self.param.delta
        xp.divide(m, tmp, out=tmp)
        xp.multiply(tmp, rate * self._lr_mult[i] * correction, out=g)


def _divide_by_root(xp, g, h, upd, delta, local_rate):
    """AdaGrad's and RMSProp's step from their squared-gradient history ``h``:
    g = local_rate * g / (sqrt(h) + delta), with ``upd`` as scratch."""
    xp.sqrt(h, out=upd)
    upd += delta
    xp.divide(g, upd, out=upd)
    xp.multiply(upd, local_rate, out=g)
