"""Caffe's ``caffe`` verbs on nets and solvers: train, test (score) and time."""
import logging
import time as _time

import numpy as np

from .. import backend
from ..parallel import training as parallel
from .device import _gpu_ids, select_device, sync
from .progress import Progress
from .signals import SignalHandler

log = logging.getLogger("minicaffe")


def _stages(args):
    return [s for s in args.stage.split(",") if s]


def _first_gpu(flag):
    """test and time run on one device: the first of a --gpu list ('all' goes to select_device as is)."""
    return flag.split(",")[0] if flag and flag != "all" else flag


def cmd_train(args, parser, handler):
    from ..solvers import get_solver, read_solver_param
    if not args.solver:
        parser.error("need a solver definition to train (--solver)")
    if args.snapshot and args.weights:
        parser.error("give --snapshot to resume training or --weights to finetune, not both")
    run = parallel.join()       # mpirun, or a child of the --gpu 0,1 launcher
    gpus = run.gpus_to_launch(_gpu_ids(args.gpu) if args.gpu not in ("", "auto") else [])
    if gpus:                    # --gpu 0,1: one process per GPU
        return parallel.launch(args, parser, gpus)
    param = read_solver_param(args.solver)
    if args.level is not None:
        param.train_state.level = args.level
    if _stages(args):
        param.train_state.stage.extend(_stages(args))
    select_device(run.device_flag(args.gpu), param)
    with SignalHandler(args.sigint_effect, args.sighup_effect) as signals, run.guard():
        run.seed(param)
        solver = get_solver(param, source=args.solver)
        solver.action_function = signals.get_action
        solver.allow_nonfinite = solver.allow_nonfinite or args.allow_nonfinite
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
        elif args.weights:
            solver.copy_weights(args.weights)
        run.attach(solver)
        log.info("Starting Optimization")
        progress = Progress(handler, param.max_iter, solver.iter, shown=run.is_root)
        solver.iteration_hooks.append(progress)
        try:
            # The solver's non-finite check reports NaN/Inf once, naming the layer; NumPy's
            # per-operation RuntimeWarnings would only repeat it.
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                solver.solve()
        finally:
            progress.close()
    return 0


def _net(args, phase):
    from ..net import Net
    level = args.level or 0
    return Net(args.model, phase=phase, level=level, stages=_stages(args))


def cmd_test(args, parser, handler):
    from ..net import TEST
    if not args.model:
        parser.error("need a model definition to score (--model)")
    if not args.weights:
        parser.error("need model weights to score (--weights)")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    select_device(_first_gpu(args.gpu))
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
    from ..net import TEST, TRAIN
    if not args.model:
        parser.error("need a model definition to time (--model)")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    phase = TEST if args.phase == "TEST" else TRAIN
    select_device(_first_gpu(args.gpu))
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
            sync()
            fwd[i] += clock() - t0
        forward_time += clock() - iter_start
        back_start = clock()
        for i in range(n - 1, -1, -1):
            if net.layer_need_backward(i):
                t0 = clock()
                layers[i].backward(tops[i], need[i], bottoms[i])
                sync()
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
