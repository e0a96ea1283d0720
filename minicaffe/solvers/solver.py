"""The Solver base: Caffe's training loop, test phase and snapshots.

``Solver`` builds the train net and the test nets (sharing the train net's weights) from a
SolverParameter and runs the loop of Caffe's ``Solver::Step``: clear the parameter diffs,
test every ``test_interval``, accumulate ``iter_size`` forward/backward passes, display the
smoothed loss, apply the update (subclasses: see ``sgd.py``), snapshot every ``snapshot``
iterations. Signals reach the loop through ``action_function`` (the command line sets it).

Reproducibility: with ``random_seed >= 0`` the seed is applied before the nets are built (the
initial weights), and at the start of every iteration the host random generator is re-keyed
by ``(random_seed, iter)``. The random draws of an iteration (DummyData fillers, dropout masks
on the CPU) therefore depend only on the seed and the iteration number, so training K
iterations, snapshotting and resuming for L more gives bitwise the same weights as K + L
straight on the CPU. Data read from a database keeps its own cursor, which a solverstate does
not record (nor does Caffe's).

GPU mode: the nets live on the device and the loop never waits for it. A loss is a device
scalar; the losses of the iterations since the last read are copied to the host in one go
when they are displayed (or every ``_LOSS_FLUSH`` iterations), and the smoothed loss is then
updated from them in order, exactly as on the CPU. Test outputs are summed on the device and
read once per test.
"""
import logging
import os
import time

import numpy as np
from google.protobuf import text_format

from .. import backend
from ..errors import MiniCaffeError
from ..io.protobinary import write_binary
from ..io.prototxt import read_prototxt
from ..net import TEST, TRAIN, Net
from ..proto import caffe_pb2

log = logging.getLogger("minicaffe")

_LOSS_FLUSH = 256   # device losses kept before they are read even without a display

SolverParameter = caffe_pb2.SolverParameter
_LEGACY_TYPES = {SolverParameter.SGD: "SGD", SolverParameter.NESTEROV: "Nesterov",
                 SolverParameter.ADAGRAD: "AdaGrad", SolverParameter.RMSPROP: "RMSProp",
                 SolverParameter.ADADELTA: "AdaDelta", SolverParameter.ADAM: "Adam"}


def load_solver_param(param, source=None):
    """(SolverParameter, source path) from a solver prototxt path or a SolverParameter (copied
    and upgraded, so the caller's message is never changed)."""
    if isinstance(param, (str, os.PathLike)):
        source = os.fspath(param)
        return read_solver_param(source), source
    if isinstance(param, SolverParameter):
        copy = SolverParameter()
        copy.CopyFrom(param)
        return upgrade_solver(copy, source or "<SolverParameter>"), source
    raise TypeError("a solver needs a solver prototxt path or a SolverParameter")


class SolverAction:
    """What a signal asks the training loop to do after the current iteration."""
    NONE = "none"
    STOP = "stop"
    SNAPSHOT = "snapshot"


def _g(x):
    """A number as C++ streams print a float (6 significant digits), e.g. 0.01, 1e-05."""
    return "%g" % float(x)


# -- reading solver files ------------------------------------------------------------------
def upgrade_solver(param, source="<solver>"):
    """Map the deprecated ``solver_type`` enum to the ``type`` string, as Caffe's upgrade does."""
    if param.HasField("solver_type"):
        if param.HasField("type"):
            raise MiniCaffeError(
                f"{source}: both the deprecated solver_type "
                f"({SolverParameter.SolverType.Name(param.solver_type)}) and type "
                f"('{param.type}') are given; keep only type")
        param.type = _LEGACY_TYPES[param.solver_type]
        param.ClearField("solver_type")
        log.info("%s: upgraded deprecated solver_type to type: \"%s\"", source, param.type)
    return param


def read_solver_param(path):
    """A SolverParameter from a prototxt, upgraded, with Caffe's default snapshot_prefix.

    Without ``snapshot_prefix`` the prefix is the solver path without its extension (snapshots
    land next to the solver file); a prefix naming a directory gets the solver file's stem.
    """
    path = os.fspath(path)
    param = read_prototxt(path, SolverParameter())
    upgrade_solver(param, path)
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = os.path.splitext(path)[0]
        log.info("snapshot_prefix was not specified and is set to %s", param.snapshot_prefix)
    elif os.path.isdir(param.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(path))[0]
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, stem)
        log.info("snapshot_prefix is a directory and is replaced by %s", param.snapshot_prefix)
    return param


# -- the solver ------------------------------------------------------------------------------
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
        self._check_snapshot_permissions()
        if param.random_seed >= 0:
            backend.set_random_seed(param.random_seed)
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        for tnet in self.test_nets:
            tnet.share_with(self.net)
            tnet.set_forward_only()
        for w in param.weights:
            self.copy_weights(w)
        log.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.requested_early_exit = False
        self.action_function = None      # returns a SolverAction; the CLI's signal handler
        self.iteration_hooks = []         # called with the solver after every iteration
        self._callbacks = []
        self.losses = []
        self._smoothed = 0.0
        self._pending = []               # (iter, start_iter, average_loss, device loss)
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
        if p.snapshot_format == SolverParameter.HDF5:
            log.warning("snapshot_format HDF5 is not supported; writing BINARYPROTO snapshots")

    def _check_snapshot_permissions(self):
        p = self.param
        if not p.snapshot:
            return
        if not p.snapshot_prefix:
            raise self._error("snapshot is set but snapshot_prefix is not")
        probe = self._snapshot_filename(".tempfile", 0)
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError:
            raise self._error(f"cannot write to snapshot prefix '{p.snapshot_prefix}'; make sure "
                              "that the directory exists and is writeable") from None

    # -- nets --------------------------------------------------------------------------------
    def _read_net_file(self, path, field):
        if not os.path.exists(path):
            base = os.path.dirname(self.source) if self.source else ""
            alt = os.path.join(base, path) if base and not os.path.isabs(path) else None
            if alt and os.path.exists(alt):
                raise self._error(
                    f"{field} '{path}' not found relative to the working directory "
                    f"{os.getcwd()} (as in Caffe, paths in a solver file are relative to where "
                    f"you run it); did you mean '{alt}'? Run from '{base}' or write that path")
            raise self._error(f"{field} '{path}': no such file")
        return read_prototxt(path, caffe_pb2.NetParameter())

    def _init_train_net(self):
        p = self.param
        fields = ("net", "net_param", "train_net", "train_net_param")
        given = [f for f in fields if p.HasField(f)]
        if not given:
            raise self._error("no train net: give one of " + ", ".join(fields))
        if len(given) > 1:
            raise self._error("more than one train net given (" + ", ".join(given) +
                              "); keep one")
        field = given[0]
        if field.endswith("_param"):
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(getattr(p, field))
            log.info("Creating training net specified in %s.", field)
        else:
            log.info("Creating training net from %s file: %s", field, getattr(p, field))
            net_param = self._read_net_file(getattr(p, field), field)
        state = caffe_pb2.NetState(phase=TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        return Net(net_param, phase=state.phase)

    def _init_test_nets(self):
        p = self.param
        generic = "net_param" if p.HasField("net_param") else "net" if p.HasField("net") else None
        n_specific = len(p.test_net_param) + len(p.test_net)
        n_iter = len(p.test_iter)
        if generic and n_iter < n_specific or not generic and n_iter != n_specific:
            raise self._error(f"test_iter must be given once per test net: {n_iter} test_iter "
                              f"value(s) for {n_specific} test net(s)")
        n_total = n_specific + (n_iter - n_specific if generic else 0)
        if len(p.test_state) and len(p.test_state) != n_total:
            raise self._error(f"test_state must be left out or given once per test net: "
                              f"{len(p.test_state)} test_state for {n_total} test net(s)")
        if n_total and p.test_interval <= 0:
            raise self._error("test nets are given (test_iter) but test_interval is not set "
                              "to a positive number")
        sources, params = [], []
        for tp in p.test_net_param:
            sources.append("test_net_param")
            params.append(caffe_pb2.NetParameter())
            params[-1].CopyFrom(tp)
        for path in p.test_net:
            sources.append("test_net file: " + path)
            params.append(self._read_net_file(path, "test_net"))
        for _ in range(n_total - n_specific):
            if generic == "net_param":
                sources.append("net_param")
                params.append(caffe_pb2.NetParameter())
                params[-1].CopyFrom(p.net_param)
            else:
                sources.append("net file: " + p.net)
                params.append(self._read_net_file(p.net, "net"))
        nets = []
        for i, net_param in enumerate(params):
            state = caffe_pb2.NetState(phase=TEST)
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(state)
            log.info("Creating test net (#%d) specified by %s", i, sources[i])
            nets.append(Net(net_param, phase=state.phase))
        return nets

    def copy_weights(self, weights):
        """Load .caffemodel weights (comma-separated list allowed) into the train and test nets."""
        for path in str(weights).split(","):
            log.info("Finetuning from %s", path)
            self.net.copy_from(path)
            for tnet in self.test_nets:
                tnet.copy_from(path)

    # -- the loop ------------------------------------------------------------------------------
    def add_callback(self, on_start, on_gradients_ready):
        """pycaffe's hook: ``on_start()`` before each iteration's forward/backward,
        ``on_gradients_ready()`` before the update."""
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
        self._flush_losses()
        return self._smoothed

    @smoothed_loss.setter
    def smoothed_loss(self, value):
        self._pending = []
        self._smoothed = value

    @property
    def last_smoothed_loss(self):
        """The smoothed loss as of the last read from the device (never waits for it): for
        progress displays that update every iteration."""
        return self._smoothed

    def _record_loss(self, loss, start_iter, average_loss):
        if isinstance(loss, (float, int, np.floating, np.integer)) or \
                type(loss) is np.ndarray:
            self._flush_losses()
            self._update_smoothed_loss(float(loss), start_iter, average_loss)
            return
        self._pending.append((self.iter, start_iter, average_loss, loss))
        if len(self._pending) >= _LOSS_FLUSH:
            self._flush_losses()

    def _flush_losses(self):
        pending = self._pending
        if not pending:
            return
        self._pending = []
        xp = backend.get_array_module(pending[0][3])
        values = backend.to_numpy(xp.stack([xp.asarray(v, dtype=np.float64).reshape(())
                                            for *_, v in pending]))
        for (it, start_iter, average_loss, _), v in zip(pending, values):
            self._update_smoothed_loss(float(v), start_iter, average_loss, it)

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
        self.losses = []
        self.smoothed_loss = 0.0
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
            loss = 0.0
            for _ in range(p.iter_size):
                loss += self.net.forward_backward()
            loss /= p.iter_size
            self._record_loss(loss, start_iter, p.average_loss)
            if display:
                self._display()
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
        log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, _g(per_s),
                 _g(lapse), p.display, _g(smoothed))
        self._timer = time.perf_counter()
        self._iters_last = self.iter
        index = 0
        for name in self.net.outputs:
            weight = self.net.blob_loss_weights[name]
            for v in self.net.blobs[name].cpu_data().ravel():
                extra = f" (* {_g(weight)} = {_g(weight * v)} loss)" if weight else ""
                log.info("    Train net output #%d: %s = %s%s", index, name, _g(v), extra)
                index += 1

    def _update_smoothed_loss(self, loss, start_iter, average_loss, it=None):
        it = self.iter if it is None else it
        if len(self.losses) < average_loss:
            self.losses.append(loss)
            n = len(self.losses)
            self._smoothed = (self._smoothed * (n - 1) + loss) / n
        else:
            idx = (it - start_iter) % average_loss
            self._smoothed += (loss - self.losses[idx]) / average_loss
            self.losses[idx] = loss

    def solve(self, resume_file=None):
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
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
            self._record_loss(loss, start_iter, p.average_loss)
            log.info("Iteration %d, loss = %s", self.iter, _g(self.smoothed_loss))
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
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        self._follow_mode()
        tnet = self.test_nets[test_net_id]
        tnet.share_with(self.net)
        n_iter = p.test_iter[test_net_id]
        sums = None
        loss = 0.0
        on_device = backend.xp() is not np
        for _ in range(n_iter):
            request = self._requested_action()
            while request != SolverAction.NONE:
                if request == SolverAction.SNAPSHOT:
                    self.snapshot()
                elif request == SolverAction.STOP:
                    self.requested_early_exit = True
                request = self._requested_action()
            if self.requested_early_exit:
                break
            iter_loss = tnet.forward_from_to()
            if p.test_compute_loss:
                loss += iter_loss
            if on_device:   # summed on the device, read once after the loop
                values = [tnet.blobs[n].xdata.astype(np.float64).ravel() for n in tnet.outputs]
            else:
                values = [backend.to_numpy(tnet.blobs[n].data).astype(np.float64).ravel()
                          for n in tnet.outputs]
            if sums is None:
                sums = [v.copy() for v in values]
            else:
                for s, v in zip(sums, values):
                    s += v
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return None
        if on_device:
            sums = [backend.to_numpy(v) for v in sums] if sums is not None else None
            loss = backend.to_float(loss)
        if p.test_compute_loss:
            log.info("Test loss: %s", _g(loss / n_iter))
        means, index = [], 0
        for name, s in zip(tnet.outputs, sums or []):
            weight = tnet.blob_loss_weights[name]
            for v in s:
                mean = v / n_iter
                means.append(mean)
                extra = f" (* {_g(weight)} = {_g(weight * mean)} loss)" if weight else ""
                log.info("    Test net output #%d: %s = %s%s", index, name, _g(mean), extra)
                index += 1
        self.mean_scores[test_net_id] = means
        return means

    # -- snapshots -----------------------------------------------------------------------------
    def _snapshot_filename(self, extension, it=None):
        return f"{self.param.snapshot_prefix}_iter_{self.iter if it is None else it}{extension}"

    def snapshot(self):
        """Write ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate``; returns both paths."""
        if not self.param.snapshot_prefix:
            raise self._error("cannot snapshot: snapshot_prefix is not set")
        model_file = self._snapshot_filename(".caffemodel")
        log.info("Snapshotting to binary proto file %s", model_file)
        try:
            write_binary(self.net.to_proto(write_diff=self.param.snapshot_diff), model_file)
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
