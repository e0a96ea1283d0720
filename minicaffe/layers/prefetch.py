"""Batches prepared ahead in a background thread (Caffe's BasePrefetchingDataLayer).

``Prefetcher`` runs a batch producer in a daemon thread, ``prefetch`` batches ahead, so
reading, decoding and transforming overlap the net's compute; ``PrefetchingDataLayer`` is the
base of the layers that serve its batches (Data, ImageData).
"""
import os
import queue
import threading
import weakref

import numpy as np

from .. import backend
from ..errors import MiniCaffeError
from .sources import DataSourceLayer

_STOP = object()


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def _yield_to_compute():
    """Lower this thread's CPU priority (Linux nice is per thread): on a machine whose cores
    the compute threads fill, the reader then runs in their idle moments instead of pre-empting
    an OpenMP worker mid-layer, which stalled every other worker at the layer's barrier."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(10, os.getpriority(os.PRIO_PROCESS, tid)))
    except (AttributeError, OSError):   # not Linux, or not permitted: run at normal priority
        pass


def _prefetch_loop(produce, free, full):
    _yield_to_compute()
    while True:
        token = free.get()
        if token is _STOP:
            return
        try:
            batch = produce(token)
        except BaseException as e:  # handed to the consumer, which raises it in forward
            full.put(_Failure(e))
            return
        full.put(batch)


class Prefetcher:
    """Runs ``produce(recycled)`` in a daemon thread, keeping up to ``count`` batches ready.

    ``produce`` gets back a batch the consumer has finished with (or None) so it can reuse the
    buffers. It must not reference the layer, so that an unused layer can be collected (the
    layer stops the thread when it goes away).
    """

    def __init__(self, produce, count, name="data"):
        self._free = queue.Queue()
        self._full = queue.Queue()
        self._failure = None
        for _ in range(max(int(count), 1)):
            self._free.put(None)
        self._thread = threading.Thread(target=_prefetch_loop,
                                        args=(produce, self._free, self._full),
                                        name=f"minicaffe-prefetch-{name}", daemon=True)
        self._thread.start()

    def get(self):
        if self._failure is not None:
            raise self._failure
        item = self._full.get()
        if isinstance(item, _Failure):
            self._failure = item.exc
            raise item.exc
        return item

    def recycle(self, batch):
        self._free.put(batch)

    def stop(self):
        self._free.put(_STOP)


class PrefetchingDataLayer(DataSourceLayer):
    """Shared plumbing: a batch producer run by a Prefetcher (or inline with prefetch 0)."""
    min_num_top = 1
    max_num_top = 2

    def _dedicated_rng(self):
        seed = int(backend.rng().integers(0, 2 ** 63 - 1))
        return np.random.default_rng(seed)

    def _start(self, producer, prefetch):
        self._producer = producer
        self._prefetcher = None
        if prefetch > 0:
            self._prefetcher = Prefetcher(producer, prefetch, self.name)
            weakref.finalize(self, self._prefetcher.stop)     # holds no reference to self

    def close(self):
        """Stop the prefetch thread (it also stops when the layer is garbage collected)."""
        if getattr(self, "_prefetcher", None) is not None:
            self._prefetcher.stop()
            self._prefetcher = None

    def next_batch(self):
        try:
            if self._prefetcher is None:
                return self._producer(None), False
            return self._prefetcher.get(), True
        except MiniCaffeError as e:
            if str(e).startswith(f"{self.type} layer '{self.name}'"):
                raise
            self.fail(str(e))
        except Exception as e:
            self.fail(f"loading a batch failed: {type(e).__name__}: {e}")

    def forward(self, bottom, top):
        (data, labels), recycle = self.next_batch()
        top[0].reshape(data.shape)
        top[0].xdata[...] = top[0].xp.asarray(data)
        if len(top) > 1:
            top[1].reshape(labels.shape)
            top[1].xdata[...] = top[1].xp.asarray(labels)
        if recycle:
            self._prefetcher.recycle((data, labels))

