"""CPU/GPU selection from --gpu or the solver (as Caffe's tool does), and ``device_query``."""
import logging
import os

import numpy as np

from .. import backend
from ..errors import MiniCaffeError

log = logging.getLogger("minicaffe")


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
