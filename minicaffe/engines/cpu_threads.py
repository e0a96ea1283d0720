"""Work split over the CPU cores by items (images), each thread running BLAS on one thread.

OpenBLAS splits every large product over its threads, but the convolution-shaped products of
a whole batch (K = 25*C, 32 or 64 output channels) first pack the whole column matrix -- tens
of MB per layer, built by im2col just before -- and so wait on memory: 65-75 GFLOP/s here on
products that reach ~200 on square shapes. One image at a time per core keeps its columns
(under 1 MB) in that core's cache from im2col to GEMM, and writes the output in NCHW order
directly. A probe of the example's conv2 forward: 32 ms -> 21 ms.

``run(fn, count, chunk)`` calls ``fn(lo, hi)`` on the chunks of ``range(count)``, the workers
(the calling thread is one) taking chunks as they come free, with BLAS held to one thread
meanwhile (threadpoolctl), and returns the chunks' results in order. The number of workers is BLAS's
own thread count when first asked, so ``OPENBLAS_NUM_THREADS=1`` keeps everything on one core;
``set_workers`` overrides it.
"""
import os
import threading
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor, wait

_state = {"blas": None, "workers": None, "pool": None, "pool_size": 0, "pid": None}
_lock = threading.Lock()


def _blas():
    """threadpoolctl's controller of the loaded BLAS libraries, or False without one."""
    if _state["blas"] is None:
        try:
            from threadpoolctl import ThreadpoolController
            blas = ThreadpoolController().select(user_api="blas")
            _state["blas"] = blas if blas.info() else False
        except Exception:   # no threadpoolctl, or a BLAS it cannot drive
            _state["blas"] = False
    return _state["blas"]


def available():
    """True when BLAS's thread count can be held to one (the per-item split needs it)."""
    return bool(_blas())


def workers():
    if _state["workers"] is None:
        blas = _blas()
        counts = [lib.get("num_threads") or 1 for lib in blas.info()] if blas else [1]
        _state["workers"] = max(1, int(max(counts)))
    return _state["workers"]


def set_workers(n):
    """Use ``n`` threads from now on (None: BLAS's thread count again)."""
    _state["workers"] = None if n is None else max(1, int(n))


def _pool(size):
    with _lock:
        # A forked child inherits the pool object but none of its threads: start afresh.
        if _state["pool"] is not None and _state["pid"] != os.getpid():
            _state["pool"], _state["pool_size"] = None, 0
        if _state["pool"] is None or _state["pool_size"] < size:
            if _state["pool"] is not None:
                _state["pool"].shutdown(wait=False)
            _state["pool"] = ThreadPoolExecutor(size, thread_name_prefix="minicaffe-cpu")
            _state["pool_size"], _state["pid"] = size, os.getpid()
        return _state["pool"]


_held = {"count": 0, "limiter": None}


@contextmanager
def _one_blas_thread():
    # Counted, so that overlapping run() calls from two threads restore BLAS only once, last.
    with _lock:
        if _held["count"] == 0:
            _held["limiter"] = _blas().limit(limits=1)
        _held["count"] += 1
    try:
        yield
    finally:
        with _lock:
            _held["count"] -= 1
            if _held["count"] == 0:
                _held["limiter"].restore_original_limits()


def run(fn, count, chunk=1):
    """[fn(lo, hi) for each chunk of ``chunk`` items of range(count)], in chunk order. The
    workers take chunks as they come free (a core slowed by another process does less), and
    since the chunks do not depend on the number of workers, neither do the results."""
    bounds = [(lo, min(count, lo + chunk)) for lo in range(0, count, chunk)]
    results = [None] * len(bounds)
    todo = iter(range(len(bounds)))     # next() on it is atomic under the GIL

    def work():
        for i in todo:
            results[i] = fn(*bounds[i])

    parts = min(workers(), len(bounds))
    with _one_blas_thread():
        if parts <= 1:
            work()
            return results
        futures = [_pool(parts - 1).submit(work) for _ in range(parts - 1)]
        try:
            work()
        finally:
            wait(futures)    # every chunk ends before BLAS gets its threads back
    for f in futures:
        f.result()           # re-raises a worker's error
    return results
