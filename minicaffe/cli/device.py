"""CPU/GPU selection from --gpu or the solver (as Caffe's tool does), and ``device_query``.

As in Caffe, asking for a GPU that cannot be used stops with an error (exit 1) naming what
is missing. Falling back to the CPU takes an explicit opt-in: ``--gpu auto`` (the GPU when
there is one, else the CPU with one log line), or the environment variable
``MINICAFFE_GPU_FALLBACK=1`` (any GPU request then runs on the CPU, with a warning, when the
GPU is unusable).
"""
import logging
import os

import numpy as np

from .. import backend
from ..errors import MiniCaffeError

log = logging.getLogger("minicaffe")

FALLBACK_ENV = "MINICAFFE_GPU_FALLBACK"


def _gpu_ids(flag):
    if flag == "all":
        cp = backend.cupy_module()
        n = cp.cuda.runtime.getDeviceCount() if cp is not None else 0
        return list(range(n)) or [0]
    try:
        return [int(s) for s in flag.split(",") if s.strip()]
    except ValueError:
        raise MiniCaffeError(f"--gpu '{flag}': expected device ids like 0 or 0,1, 'all' or "
                             "'auto'") from None


def gpu_problem(device):
    """Why GPU ``device`` cannot be used (CuPy missing, no CUDA device, id out of range), or
    None when it can."""
    if backend.cupy_module() is None:
        try:
            import cupy
        except Exception as e:  # ImportError, or a broken CUDA install raising on import
            return (f"CuPy is not importable ({type(e).__name__}: {e}); install it with "
                    "`pip install minicaffe[gpu]`")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # no driver: cudaErrorNoDevice / InsufficientDriver
            return f"no CUDA device ({type(e).__name__}: {e})"
        if count < 1:
            return "no CUDA device (CuPy sees 0 devices)"
    count = backend.cupy_module().cuda.runtime.getDeviceCount()
    if not 0 <= device < count:
        return f"device {device} is out of range ({count} CUDA device(s) found: 0..{count - 1})"
    return None


def _fallback_allowed():
    return os.environ.get(FALLBACK_ENV, "") not in ("", "0")


def _use_cpu():
    log.info("Use CPU.")
    backend.set_mode_cpu()
    return False


def select_device(gpu_flag, solver_param=None):
    """Set CPU or GPU mode as caffe does: --gpu wins, else the solver's solver_mode/device_id.

    An explicit request (--gpu N, or solver_mode: GPU written in the solver) for an unusable
    GPU is an error unless MINICAFFE_GPU_FALLBACK=1. ``--gpu auto`` and a solver that does
    not mention solver_mode (Caffe's default is GPU) use the GPU only when there is one.
    """
    auto = gpu_flag == "auto"
    explicit = bool(gpu_flag) and not auto
    ids = _gpu_ids(gpu_flag) if explicit else [0] if auto else []
    if not ids and solver_param is not None and \
            solver_param.solver_mode == solver_param.GPU:
        ids = [solver_param.device_id]
        explicit = solver_param.HasField("solver_mode")
        auto = not explicit
    if not ids:
        return _use_cpu()
    problem = gpu_problem(ids[0])
    if problem:
        if explicit and not _fallback_allowed():
            source = "--gpu" if gpu_flag else "solver_mode: GPU in the solver"
            raise MiniCaffeError(f"GPU {ids[0]} requested ({source}) but it cannot be used: "
                                 f"{problem}. Use --gpu auto or set {FALLBACK_ENV}=1 to run "
                                 "on the CPU instead")
        if explicit:
            log.warning("GPU %d is not usable (%s); running on the CPU (%s=1)", ids[0],
                        problem, FALLBACK_ENV)
        elif not gpu_flag:
            return _use_cpu()
        else:
            log.info("--gpu auto: no usable GPU (%s); using the CPU", problem)
        backend.set_mode_cpu()
        return False
    cp = backend.cupy_module()
    if len(ids) > 1:
        log.warning("multi-GPU runs are not supported; using GPU %d only", ids[0])
    backend.set_device(ids[0])
    backend.set_mode_gpu()
    name = cp.cuda.runtime.getDeviceProperties(ids[0])["name"]
    name = name.decode() if isinstance(name, bytes) else name
    log.info("Using GPUs %d", ids[0])
    log.info("GPU %d: %s", ids[0], name)
    return True


def sync():
    if backend.mode() == "gpu":
        backend.cupy_module().cuda.get_current_stream().synchronize()


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
        if args.gpu and args.gpu not in ("all", "auto") and not _fallback_allowed():
            device = _gpu_ids(args.gpu)[0]
            raise MiniCaffeError(f"cannot query GPU {device}: {gpu_problem(device)}")
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
