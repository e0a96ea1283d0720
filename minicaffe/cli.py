"""The ``minicaffe`` command: Caffe's ``caffe`` tool (train / test / time / device_query).

Flags are Caffe's and may be spelled as gflags allows: ``--solver s.prototxt``,
``-solver s.prototxt``, ``-solver=s.prototxt`` or ``--solver=s.prototxt``, before or after
the verb. Output is logged to stderr in glog's format so Caffe log parsers keep working.

Exit codes: 0 success, 1 a user error (missing or malformed file, bad net...; one line
``minicaffe: error: ...``), 2 a command-line mistake, 130 interrupted.
"""
import argparse
import logging
import os
import signal
import sys
import time as _time

import numpy as np

from . import backend
from .errors import MiniCaffeError
from .logging_setup import setup_logging

log = logging.getLogger("minicaffe")

VERBS = {
    "train": "train or finetune a model",
    "test": "score a model",
    "device_query": "show GPU diagnostic information",
    "time": "benchmark model execution time",
}
# Caffe's flags (tools/caffe.cpp); every one takes a value.
FLAGS = ("gpu", "solver", "model", "phase", "level", "stage", "snapshot", "weights",
         "iterations", "sigint_effect", "sighup_effect")
EFFECTS = ("stop", "snapshot", "none")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"minicaffe: error: {message} (see 'minicaffe --help')\n")
        sys.exit(2)


def build_parser():
    usage = "minicaffe <command> [--flag value ...]"
    epilog = "commands:\n" + "\n".join(f"  {k:<15} {v}" for k, v in VERBS.items()) + (
        "\n  data cifar10    get CIFAR-10 and convert it to LMDBs (see its --help)" +
        "\n  classify        top-k classes of images through a deploy net" +
        "\n  draw            render a net prototxt with graphviz" +
        "\n  fold-bn         fold BatchNorm/Scale/Bias into the preceding conv/ip weights" +
        "\n\nFlags may also be written Caffe's way: -solver s.prototxt, -solver=s.prototxt.")
    p = _Parser(prog="minicaffe", usage=usage, allow_abbrev=False, epilog=epilog,
                description="command line brew (Caffe's `caffe` tool)",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=list(VERBS), metavar="command",
                   help="one of: " + ", ".join(VERBS))
    p.add_argument("--gpu", default="",
                   help="run in GPU mode on the given device id ('all' or a list: the first "
                        "is used)")
    p.add_argument("--solver", default="", help="the solver definition prototxt")
    p.add_argument("--model", default="", help="the model definition prototxt")
    p.add_argument("--phase", default="", choices=["", "TRAIN", "TEST"], metavar="PHASE",
                   help="network phase (TRAIN or TEST); only used by 'time'")
    p.add_argument("--level", type=int, default=None, help="network level")
    p.add_argument("--stage", default="", help="network stages, separated by ','")
    p.add_argument("--snapshot", default="", help="a .solverstate to resume training from")
    p.add_argument("--weights", default="",
                   help="pretrained weights (.caffemodel, several separated by ',')")
    p.add_argument("--iterations", type=int, default=50, help="iterations to run (test, time)")
    p.add_argument("--sigint_effect", default="stop", choices=EFFECTS,
                   help="on SIGINT (Ctrl-C): snapshot, stop or none (default stop)")
    p.add_argument("--sighup_effect", default="snapshot", choices=EFFECTS,
                   help="on SIGHUP: snapshot, stop or none (default snapshot)")
    from . import __version__
    p.add_argument("--version", action="version", version=f"minicaffe {__version__}")
    return p


def normalize_argv(argv):
    """Rewrite gflags' single-dash spellings (-solver x, -solver=x) into --solver x."""
    out = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name = arg[1:].split("=", 1)[0]
            if name in FLAGS or name in ("help", "version"):
                arg = "-" + arg
        out.append(arg)
    return out


def _stages(args):
    return [s for s in args.stage.split(",") if s]


# -- GPU selection ---------------------------------------------------------------------------
def _gpu_ids(flag):
    if flag == "all":
        cp = backend.cupy_module()
        n = cp.cuda.runtime.getDeviceCount() if cp is not None else 0
        return list(range(n)) or [0]
    try:
        return [int(s) for s in flag.split(",") if s.strip()]
    except ValueError:
        raise MiniCaffeError(f"--gpu '{flag}': expected device ids like 0 or 0,1, or 'all'") \
            from None


def select_device(gpu_flag, solver_param=None):
    """Set CPU or GPU mode as caffe does: --gpu wins, else the solver's solver_mode/device_id.

    The GPU is used only when CuPy and a device are usable; otherwise the CPU, with a
    warning when the GPU was asked for explicitly (Caffe's default solver_mode is GPU, so a
    solver file that does not mention it quietly runs on the CPU here).
    """
    explicit = bool(gpu_flag)
    ids = _gpu_ids(gpu_flag) if gpu_flag else []
    if not ids and solver_param is not None and \
            solver_param.solver_mode == solver_param.GPU:
        ids = [solver_param.device_id]
        explicit = solver_param.HasField("solver_mode")
    if not ids:
        log.info("Use CPU.")
        backend.set_mode_cpu()
        return False
    cp = backend.cupy_module()
    if cp is None:
        if explicit:
            log.warning("GPU %s requested, but CuPy or a usable NVIDIA GPU is missing; "
                        "running on the CPU", ids[0])
        log.info("Use CPU.")
        backend.set_mode_cpu()
        return False
    count = cp.cuda.runtime.getDeviceCount()
    if ids[0] >= count or ids[0] < 0:
        raise MiniCaffeError(f"GPU {ids[0]} does not exist ({count} device(s) found)")
    if len(ids) > 1:
        log.warning("multi-GPU runs are not supported; using GPU %d only", ids[0])
    backend.set_device(ids[0])
    backend.set_mode_gpu()
    name = cp.cuda.runtime.getDeviceProperties(ids[0])["name"]
    name = name.decode() if isinstance(name, bytes) else name
    log.info("Using GPUs %d", ids[0])
    log.info("GPU %d: %s", ids[0], name)
    return True


def _sync():
    if backend.mode() == "gpu":
        backend.cupy_module().cuda.get_current_stream().synchronize()


# -- signals ---------------------------------------------------------------------------------
class SignalHandler:
    """Caffe's SignalHandler: SIGINT/SIGHUP set a flag; the solver asks after each iteration.

    A second SIGINT before the first was acted on aborts at once (KeyboardInterrupt).
    """

    def __init__(self, sigint_effect="stop", sighup_effect="snapshot"):
        self.effects = {"SIGINT": sigint_effect, "SIGHUP": sighup_effect}
        self.pending = {"SIGINT": False, "SIGHUP": False}
        self._old = {}

    def _on_signal(self, signum, frame):
        name = "SIGHUP" if signum == getattr(signal, "SIGHUP", None) else "SIGINT"
        if name == "SIGINT" and self.pending["SIGINT"]:
            raise KeyboardInterrupt
        self.pending[name] = True

    def __enter__(self):
        for name in ("SIGINT", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def get_action(self):
        for name in ("SIGINT", "SIGHUP"):
            if self.pending[name]:
                self.pending[name] = False
                effect = self.effects[name]
                if effect != "none":
                    log.info("%s received: %s", name, effect)
                return effect
        return "none"


# -- progress bar ----------------------------------------------------------------------------
class _Progress:
    """A tqdm bar (rate, ETA, loss) on an interactive stderr; nothing otherwise."""

    def __init__(self, handler, total, initial):
        self.bar = None
        self.handler = handler
        if not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            return
        self.bar = tqdm(total=total, initial=initial, unit="iter", file=sys.stderr,
                        dynamic_ncols=True, leave=False)
        handler.bar = self.bar

    def __call__(self, solver):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss={solver.last_smoothed_loss:.4g}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.handler.bar = None
            self.bar.close()


# -- verbs -----------------------------------------------------------------------------------
def cmd_train(args, parser, handler):
    from .solvers import get_solver, read_solver_param
    if not args.solver:
        parser.error("need a solver definition to train (--solver)")
    if args.snapshot and args.weights:
        parser.error("give --snapshot to resume training or --weights to finetune, not both")
    param = read_solver_param(args.solver)
    if args.level is not None:
        param.train_state.level = args.level
    if _stages(args):
        param.train_state.stage.extend(_stages(args))
    select_device(args.gpu, param)
    with SignalHandler(args.sigint_effect, args.sighup_effect) as signals:
        solver = get_solver(param, source=args.solver)
        solver.action_function = signals.get_action
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
        elif args.weights:
            solver.copy_weights(args.weights)
        log.info("Starting Optimization")
        progress = _Progress(handler, param.max_iter, solver.iter)
        solver.iteration_hooks.append(progress)
        try:
            solver.solve()
        finally:
            progress.close()
    return 0


def _net(args, phase):
    from .net import Net
    level = args.level or 0
    return Net(args.model, phase=phase, level=level, stages=_stages(args))


def cmd_test(args, parser, handler):
    from .net import TEST
    if not args.model:
        parser.error("need a model definition to score (--model)")
    if not args.weights:
        parser.error("need model weights to score (--weights)")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    select_device(args.gpu.split(",")[0] if args.gpu and args.gpu != "all" else args.gpu)
    net = _net(args, TEST)
    net.copy_from(args.weights)
    log.info("Running for %d iterations.", args.iterations)
    sums = None
    loss = 0.0
    names = net.outputs
    for i in range(args.iterations):
        loss += net.forward_from_to()
        values = [backend.to_numpy(net.blobs[n].data).astype(np.float64).ravel() for n in names]
        for name, vals in zip(names, values):
            for v in vals:
                log.info("Batch %d, %s = %s", i, name, "%g" % v)
        if sums is None:
            sums = [v.copy() for v in values]
        else:
            for s, v in zip(sums, values):
                s += v
    log.info("Loss: %s", "%g" % (loss / args.iterations))
    for name, s in zip(names, sums or []):
        weight = net.blob_loss_weights[name]
        for v in s:
            mean = v / args.iterations
            extra = f" (* {weight:g} = {weight * mean:g} loss)" if weight else ""
            log.info("%s = %s%s", name, "%g" % mean, extra)
    return 0


def cmd_time(args, parser, handler):
    from .net import TEST, TRAIN
    if not args.model:
        parser.error("need a model definition to time (--model)")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    phase = TEST if args.phase == "TEST" else TRAIN
    select_device(args.gpu.split(",")[0] if args.gpu and args.gpu != "all" else args.gpu)
    net = _net(args, phase)
    log.info("Performing Forward")
    log.info("Initial loss: %s", "%g" % net.forward_from_to())
    log.info("Performing Backward")
    net.backward_from_to()
    layers = net.layers
    bottoms, tops = net._bottom_vecs, net._top_vecs
    need = net._bottom_need_backward
    n = len(layers)
    fwd, bwd = [0.0] * n, [0.0] * n
    forward_time = backward_time = 0.0
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", args.iterations)
    clock = _time.perf_counter
    total_start = clock()
    for j in range(args.iterations):
        iter_start = clock()
        for i, layer in enumerate(layers):
            t0 = clock()
            layer.reshape(bottoms[i], tops[i])
            layer.forward(bottoms[i], tops[i])
            _sync()
            fwd[i] += clock() - t0
        forward_time += clock() - iter_start
        back_start = clock()
        for i in range(n - 1, -1, -1):
            if net.layer_need_backward(i):
                t0 = clock()
                layers[i].backward(tops[i], need[i], bottoms[i])
                _sync()
                bwd[i] += clock() - t0
        backward_time += clock() - back_start
        log.info("Iteration: %d forward-backward time: %s ms.", j + 1,
                 "%g" % ((clock() - iter_start) * 1e3))
    total = clock() - total_start
    it = args.iterations
    log.info("Average time per layer: ")
    for i, layer in enumerate(layers):
        log.info("%10s\tforward: %s ms.", layer.name, "%g" % (fwd[i] * 1e3 / it))
        log.info("%10s\tbackward: %s ms.", layer.name, "%g" % (bwd[i] * 1e3 / it))
    log.info("Average Forward pass: %s ms.", "%g" % (forward_time * 1e3 / it))
    log.info("Average Backward pass: %s ms.", "%g" % (backward_time * 1e3 / it))
    log.info("Average Forward-Backward: %s ms.", "%g" % (total * 1e3 / it))
    log.info("Total Time: %s ms.", "%g" % (total * 1e3))
    log.info("*** Benchmark ends ***")
    return 0


def cmd_device_query(args, parser, handler):
    import platform
    log.info("Querying devices %s", args.gpu)
    log.info("Python %s on %s, %d CPU core(s)", platform.python_version(), platform.machine(),
             os.cpu_count() or 0)
    log.info("NumPy %s", np.__version__)
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        log.info("BLAS: %s %s", blas.get("name", "?"), blas.get("version", ""))
        if blas.get("openblas configuration"):
            log.info("BLAS configuration: %s", blas["openblas configuration"])
    except Exception:  # older NumPy without mode="dicts"
        log.info("BLAS: unknown")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            log.info("%s=%s", var, os.environ[var])
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            log.info("Thread pool: %s (%s), %d thread(s)", pool.get("internal_api"),
                     pool.get("version"), pool.get("num_threads", 0))
    except ImportError:
        pass
    cp = backend.cupy_module()
    if cp is None:
        log.info("CuPy: not available (GPU mode unusable; pip install minicaffe[gpu])")
        return 0
    count = cp.cuda.runtime.getDeviceCount()
    try:
        driver = cp.cuda.runtime.driverGetVersion()
    except Exception:  # pragma: no cover - very old CuPy
        driver = 0
    log.info("CuPy %s, CUDA runtime %d, driver %d, %d device(s)", cp.__version__,
             cp.cuda.runtime.runtimeGetVersion(), driver, count)
    ids = range(count) if not args.gpu or args.gpu == "all" else _gpu_ids(args.gpu)
    for d in ids:
        if not 0 <= d < count:
            raise MiniCaffeError(f"GPU {d} does not exist ({count} device(s) found)")
        prop = cp.cuda.runtime.getDeviceProperties(d)
        name = prop["name"].decode() if isinstance(prop["name"], bytes) else prop["name"]
        total = int(prop["totalGlobalMem"])
        try:
            with cp.cuda.Device(d):
                free = int(cp.cuda.runtime.memGetInfo()[0])
        except Exception:  # pragma: no cover
            free = -1
        log.info("Device id:                     %d", d)
        log.info("Name:                          %s", name)
        log.info("Compute capability:            %d.%d", prop["major"], prop["minor"])
        log.info("Major revision number:         %d", prop["major"])
        log.info("Minor revision number:         %d", prop["minor"])
        log.info("Total global memory:           %d (%.1f GiB)", total, total / 2 ** 30)
        if free >= 0:
            log.info("Free global memory:            %d (%.1f GiB)", free, free / 2 ** 30)
        log.info("Number of multiprocessors:     %d", prop["multiProcessorCount"])
        log.info("Clock rate:                    %d", prop.get("clockRate", 0))
    return 0


COMMANDS = {"train": cmd_train, "test": cmd_test, "time": cmd_time,
            "device_query": cmd_device_query}
# Verbs with their own argument parsing: name -> {subcommand: "module:function(argv) -> int"}.
PASSTHROUGH = {"data": {"cifar10": "minicaffe.data.cifar10:main_cifar10"}}
# Verbs handled wholly by another module's main(argv).
DIRECT = {"draw": "minicaffe.draw:main_draw", "fold-bn": "minicaffe.fold_bn:main_fold_bn",
          "classify": "minicaffe.classify:main_classify"}


def _passthrough(verb, argv):
    if verb in DIRECT:
        subs, argv = {verb: DIRECT[verb]}, [verb] + list(argv)
    else:
        subs = PASSTHROUGH[verb]
    if not argv or argv[0] not in subs:
        sys.stderr.write(f"minicaffe: error: '{verb}' needs one of: {', '.join(subs)} "
                         f"(e.g. minicaffe {verb} {next(iter(subs))} --help)\n")
        return 2
    import importlib
    module, func = subs[argv[0]].split(":")
    setup_logging()
    try:
        return getattr(importlib.import_module(module), func)(argv[1:]) or 0
    except MiniCaffeError as e:
        sys.stderr.write(f"minicaffe: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("minicaffe: interrupted\n")
        return 130


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and (argv[0] in PASSTHROUGH or argv[0] in DIRECT):
        return _passthrough(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(normalize_argv(argv))
    handler = setup_logging()
    try:
        return COMMANDS[args.command](args, parser, handler)
    except MiniCaffeError as e:
        sys.stderr.write(f"minicaffe: error: {e}\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"minicaffe: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("minicaffe: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
