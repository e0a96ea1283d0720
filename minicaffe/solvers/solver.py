"""The Solver base: Caffe's training loop, test phase and snapshots.

``Solver`` builds the train net and the test nets (sharing the train net's weights) from a
SolverParameter (``solver_nets``) and runs the loop of Caffe's ``Solver::Step``: clear the
parameter diffs, test every ``test_interval`` (``evaluation``), accumulate ``iter_size``
forward/backward passes, display the smoothed loss (``smoothed_loss``), apply the update
(subclasses: see ``sgd.py``), snapshot every ``snapshot`` iterations (``snapshot_files``).
Signals reach the loop through ``action_function`` (the command line sets it).

Reproducibility: with ``random_seed >= 0`` the seed is applied before the nets are built (the
initial weights), and at the start of every iteration the host random generator is re-keyed
by ``(random_seed, iter)``. The random draws of an iteration (DummyData fillers, dropout masks
on the CPU) therefore depend only on the seed and the iteration number, so training K
iterations, snapshotting and resuming for L more gives bitwise the same weights as K + L
straight on the CPU. Data read from a database keeps its own cursor, which a solverstate does
not record (nor does Caffe's).

GPU mode: the nets live on the device and the loop never waits for it. A loss is a device
scalar, read in batches (see ``smoothed_loss``); test outputs are summed on the device and
read once per test (see ``evaluation``).

Robustness: a NaN or Inf loss stops training naming the layer that went non-finite
(``nonfinite``; ``allow_nonfinite`` goes on); the snapshot prefix is probed before training
(also for the final snapshot of snapshot_after_train); snapshots are written atomically in
either snapshot_format (``snapshot_files``). ``debug_info: true`` logs Caffe's per-layer
lines on display iterations (``net_debug_info``).
"""
import logging
import time

import numpy as np
from google.protobuf import text_format

from .. import backend
from ..errors import MiniCaffeError
from ..io.atomic_file import remove_stale_partials
from ..parallel import world
from .evaluation import evaluate
from .log_lines import cpp_float, log_net_outputs
from .nonfinite import NonFiniteCheck, allowed_by_env
from .smoothed_loss import SmoothedLoss
from .snapshot_files import (snapshot_extensions, snapshot_filename, snapshot_prefix_problem,
                             write_model_snapshot)
from .solver_nets import build_test_nets, build_train_net
from .solver_param import load_solver_param

log = logging.getLogger("minicaffe")


class SolverAction:
    """What a signal asks the training loop to do after the current iteration."""
    NONE = "none"
    STOP = "stop"
    SNAPSHOT = "snapshot"


class Solver:
    """Caffe's Solver: builds the train and test nets and runs the loop.

    ``Solver(path_or_SolverParameter)``. pycaffe's surface: ``net``, ``test_nets``, ``iter``,
    ``step(n)``, ``solve(resume_file=None)``, ``snapshot()``, ``restore(path)``,
    ``add_callback(on_start, on_gradients_ready)``, ``apply_update()``, ``param``.
    """
    type = "SGD"

    def __init__(self, param, source=None):
        param, source = load_solver_param(param, source)
        self.param = param
        self.source = source
        self._where = source or "<SolverParameter>"
        log.info("Initializing solver from parameters: \n%s",
                 text_format.MessageToString(param).rstrip())
        self._check_param()
        if param.random_seed >= 0:
            backend.set_random_seed(param.random_seed)
        self.net = build_train_net(param, source)
        self.test_nets = build_test_nets(param, source)
        for tnet in self.test_nets:
            tnet.share_with(self.net)
            tnet.set_forward_only()
            tnet.debug_info = param.debug_info
        for w in param.weights:
            self.copy_weights(w)
        log.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.requested_early_exit = False
        self.action_function = None      # returns a SolverAction; the CLI's signal handler
        self.iteration_hooks = []         # called with the solver after every iteration
        self.allow_nonfinite = allowed_by_env()   # False: a NaN/Inf loss stops training
        self._check_nonfinite = NonFiniteCheck(self._where, self.allow_nonfinite)
        self._callbacks = []
        self.parallel = None              # a parallel.DataParallel in a data-parallel run
        self._loss = SmoothedLoss()
        self._state_xp = backend.xp()    # module the solver's own arrays live in
        self.mean_scores = [[] for _ in self.test_nets]
        self._timer = time.perf_counter()
        self._iters_last = 0

    # -- checks ----------------------------------------------------------------------------
    def _error(self, message):
        return MiniCaffeError(f"{self._where}: {message}")

    def _check_param(self):
        p = self.param
        if p.average_loss < 1:
            raise self._error(f"average_loss must be at least 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise self._error(f"iter_size must be at least 1, got {p.iter_size}")
        self._check_snapshot_prefix()

    def _check_snapshot_prefix(self, after_train=False):
        problem = (snapshot_prefix_problem(self.param, after_train)
                   if world.is_root() else None)   # rank 0 alone writes
        if problem:
            raise self._error(problem)

    # -- nets --------------------------------------------------------------------------------
    def copy_weights(self, weights):
        """Load .caffemodel weights (comma-separated list allowed) into the train and test nets."""
        for path in str(weights).split(","):
            log.info("Finetuning from %s", path)
            self.net.copy_from(path)
            for tnet in self.test_nets:
                tnet.copy_from(path)

    # -- the loop ------------------------------------------------------------------------------
    def add_callback(self, on_start, on_gradients_ready=None):
        """pycaffe's hook: ``on_start()`` before each iteration's forward/backward,
        ``on_gradients_ready()`` before the update; or one object with both methods (a
        ``caffe.NCCL``, as pycaffe's ``solver.add_callback(nccl)``)."""
        if on_gradients_ready is None:
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self._callbacks.append((on_start, on_gradients_ready))

    def _requested_action(self):
        return self.action_function() if self.action_function else SolverAction.NONE

    def _reseed(self):
        seed = self.param.random_seed
        if seed >= 0:
            # Host generator only: keyed by (seed, iter) so a resumed run draws the same.
            backend._rng["gen"] = np.random.default_rng([int(seed), int(self.iter)])

    # -- smoothed loss ---------------------------------------------------------------------
    @property
    def smoothed_loss(self):
        """Caffe's smoothed loss (mean of the last average_loss losses); in GPU mode reading
        it copies the pending device losses to the host."""
        self._loss.flush()
        return self._loss.value

    @smoothed_loss.setter
    def smoothed_loss(self, value):
        self._loss.reset(value)

    @property
    def last_smoothed_loss(self):
        """The smoothed loss as of the last read from the device (never waits for it): for
        progress displays that update every iteration."""
        return self._loss.value

    @property
    def losses(self):
        """The last average_loss iteration losses (a ring once full)."""
        return self._loss.losses

    def _follow_mode(self):
        """Move the nets and the solver's arrays when the mode changed since they were made."""
        xp = backend.xp()
        if xp is not self._state_xp:
            self.net.to_module(xp)
            for tnet in self.test_nets:
                tnet.to_module(xp)
            self._move_state(xp)
            self._state_xp = xp

    def _move_state(self, xp):
        """Subclasses move their own arrays (history) to ``xp``."""

    def step(self, iters):
        p = self.param
        self._follow_mode()
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        self._loss = SmoothedLoss()
        self._check_nonfinite = NonFiniteCheck(self._where, self.allow_nonfinite)
        self._timer = time.perf_counter()
        self._iters_last = self.iter
        while self.iter < stop_iter:
            self._reseed()
            self.net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self._callbacks:
                on_start()
            display = p.display and self.iter % p.display == 0
            self.net.debug_info = bool(display and p.debug_info)
            loss = 0.0
            for _ in range(p.iter_size):
                loss += self.net.forward_backward()
            loss /= p.iter_size
            self._loss.record(loss, self.iter, start_iter, p.average_loss)
            if display:
                self._display()
            self._check_nonfinite(self._loss, self.net, self.iter)
            for _, on_gradients_ready in self._callbacks:
                on_gradients_ready()
            self.apply_update()
            self.iter += 1
            request = self._requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SolverAction.SNAPSHOT:
                self.snapshot()
            for hook in self.iteration_hooks:
                hook(self)
            if request == SolverAction.STOP:
                self.requested_early_exit = True
                break

    def _display(self):
        p = self.param
        smoothed = self.smoothed_loss          # the one device read of the interval
        lapse = time.perf_counter() - self._timer
        per_s = (self.iter - self._iters_last) / (lapse if lapse else 1.0)
        log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter,
                 cpp_float(per_s), cpp_float(lapse), p.display, cpp_float(smoothed))
        self._timer = time.perf_counter()
        self._iters_last = self.iter
        log_net_outputs("Train", self.net,
                        [self.net.blobs[name].cpu_data().ravel() for name in self.net.outputs])

    def solve(self, resume_file=None):
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        self._check_snapshot_prefix(after_train=True)
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        self._loss.flush()        # GPU mode: check the losses no display has read
        self._check_nonfinite(self._loss, self.net, self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            if p.snapshot_prefix:
                self.snapshot()
            else:
                log.warning("snapshot_prefix is not set: no snapshot after training")
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = self.net.forward_from_to()
            self._loss.record(loss, self.iter, start_iter, p.average_loss)
            log.info("Iteration %d, loss = %s", self.iter, cpp_float(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    # -- testing -----------------------------------------------------------------------------
    def test_all(self):
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id=0):
        """Run test net ``test_net_id`` test_iter times; log and return the mean outputs."""
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        self._follow_mode()
        means = evaluate(self.test_nets[test_net_id], self.net, self.param.test_iter[test_net_id],
                         self.param.test_compute_loss, self._stop_requested_while_testing,
                         self.requested_early_exit, split=self.parallel)
        if means is not None:
            self.mean_scores[test_net_id] = means
        return means

    def _stop_requested_while_testing(self):
        """Serve the signals that came in (snapshot now, or stop); True once stop is asked."""
        request = self._requested_action()
        while request != SolverAction.NONE:
            if request == SolverAction.SNAPSHOT:
                self.snapshot()
            elif request == SolverAction.STOP:
                self.requested_early_exit = True
            request = self._requested_action()
        return self.requested_early_exit

    # -- snapshots -----------------------------------------------------------------------------
    def _snapshot_filename(self, extension):
        return snapshot_filename(self.param.snapshot_prefix, self.iter, extension)

    def snapshot(self):
        """Write ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` (``.h5`` added for
        snapshot_format: HDF5), each atomically; returns both paths. In a data-parallel run
        only rank 0 writes (the others return None)."""
        if not world.is_root():
            return None
        p = self.param
        if not p.snapshot_prefix:
            raise self._error("cannot snapshot: snapshot_prefix is not set")
        model_file = self._snapshot_filename(snapshot_extensions(p)[0])
        try:
            remove_stale_partials(p.snapshot_prefix)
            write_model_snapshot(p, self.net, model_file)
            state_file = self.snapshot_solver_state(model_file)
        except OSError as e:
            raise self._error(f"cannot write snapshot: {e}") from None
        return model_file, state_file

    def snapshot_solver_state(self, model_file):
        raise NotImplementedError

    def restore(self, state_file):
        raise NotImplementedError

    def apply_update(self):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} iter {self.iter}, net '{self.net.name}'>"
