"""cpu_threads: chunked work over threads with BLAS held to one thread meanwhile."""
import os
import signal
import threading

import pytest

from minicaffe.engines import cpu_threads

pytestmark = pytest.mark.skipif(not cpu_threads.available(),
                                reason="threadpoolctl finds no BLAS to hold to one thread")


@pytest.fixture(autouse=True)
def three_workers():
    cpu_threads.set_workers(3)
    yield
    cpu_threads.set_workers(None)


def blas_threads():
    """Thread counts of the BLAS libraries cpu_threads holds (those loaded when it first
    looked: NumPy's; a library loaded later, e.g. SciPy's own, is not NumPy's)."""
    from threadpoolctl import threadpool_info
    held = {lib["filepath"] for lib in cpu_threads._blas().info()}
    return [lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in held]


def test_results_in_chunk_order_from_several_threads():
    names = set()

    def fn(lo, hi):
        names.add(threading.current_thread().name)
        assert blas_threads() == [1] * len(blas_threads())    # BLAS held to one thread
        return list(range(lo, hi))

    before = blas_threads()
    out = cpu_threads.run(fn, 10, 3)
    assert out == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert blas_threads() == before
    assert cpu_threads.run(fn, 0, 3) == []


def test_a_workers_error_is_raised_after_all_chunks_end_and_blas_restored():
    before = blas_threads()
    done = []

    def fn(lo, hi):
        if lo == 2:
            raise ValueError("chunk 2 failed")
        done.append(lo)

    with pytest.raises(ValueError, match="chunk 2 failed"):
        cpu_threads.run(fn, 6, 1)
    assert blas_threads() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_working_threads():
    cpu_threads.run(lambda lo, hi: None, 4, 1)       # the parent's pool exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # child: must not wait forever
        signal.alarm(20)
        try:
            out = cpu_threads.run(lambda lo, hi: hi, 4, 1)
            os.write(w, repr(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 100).decode() == "[1, 2, 3, 4]"
