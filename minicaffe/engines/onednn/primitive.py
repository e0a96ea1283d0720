"""A oneDNN primitive run on NumPy arrays, with reorders between the caller's layouts and its own.

``Handles`` owns oneDNN objects and destroys them together. ``Pass`` wraps one primitive
descriptor: for every argument whose layout the primitive chose differently from the caller's
(format ``any``), it keeps a memory in the primitive's layout and a reorder primitive to or
from the caller's; the caller's memories get their data pointer per call, so a call allocates
nothing.

Those own-layout copies (and the scratchpads) are a batch of activations each: kept per pass,
a ResNet-20 at batch 1000 held gigabytes of them. Passes run one at a time, so they all borrow
the buffers of one process-wide ``Workspace`` instead, each slot as large as the largest use.
"""
import ctypes
import threading
import weakref

import numpy as np

from . import library as L

ALIGN = 64   # bytes; oneDNN's kernels want cache-line aligned data


class Workspace:
    """Buffers lent to the passes of the process: slot k serves the k-th own-layout memory of
    whichever pass runs (under ``lock``), and only grows."""

    def __init__(self):
        self.lock = threading.Lock()
        self._buffers = []

    def addresses(self, sizes):
        out = []
        for k, size in enumerate(sizes):
            if k == len(self._buffers):
                self._buffers.append(None)
            buf = self._buffers[k]
            if buf is None or buf.nbytes < size + ALIGN:
                buf = self._buffers[k] = np.empty(size + ALIGN, np.uint8)
            address = buf.ctypes.data
            out.append(address + (-address % ALIGN))
        return out


WORKSPACE = Workspace()


def _destroy(lib, items):
    while items:
        name, handle = items.pop()
        getattr(lib, name)(handle)


class Handles:
    """oneDNN objects destroyed together, at ``close()`` or when this is garbage-collected."""

    def __init__(self):
        self.lib = L.load()
        # Bound now, so that objects made together share one engine even across a reset().
        self.engine, self.stream = L.engine(), L.stream()
        self._items = []
        self._finalizer = weakref.finalize(self, _destroy, self.lib, self._items)

    def _own(self, destroy, make, *args):
        handle = ctypes.c_void_p()
        make(ctypes.byref(handle), *args)
        self._items.append((destroy, handle))
        return handle

    def memory_desc(self, shape, tag):
        return self._own("dnnl_memory_desc_destroy", self.lib.dnnl_memory_desc_create_with_tag,
                         len(shape), L.dims(shape), L.F32, tag)

    def memory(self, md, data=None):
        """A memory of descriptor ``md`` over ``data`` (None: set later; MEMORY_ALLOCATE)."""
        return self._own("dnnl_memory_destroy", self.lib.dnnl_memory_create, md, self.engine,
                         data)

    def attr(self):
        """Attributes with a caller-owned scratchpad (each Pass keeps its own)."""
        attr = self._own("dnnl_primitive_attr_destroy", self.lib.dnnl_primitive_attr_create)
        self.lib.dnnl_primitive_attr_set_scratchpad_mode(attr, L.SCRATCHPAD_MODE_USER)
        return attr

    def post_ops(self):
        return self._own("dnnl_post_ops_destroy", self.lib.dnnl_post_ops_create)

    def primitive_desc(self, make, *args):
        return self._own("dnnl_primitive_desc_destroy", make, *args)

    def primitive(self, pd):
        return self._own("dnnl_primitive_destroy", self.lib.dnnl_primitive_create, pd)

    def close(self):
        self._finalizer()


def _exec_args(pairs):
    return (L.ExecArg * len(pairs))(*[L.ExecArg(arg, mem.value) for arg, mem in pairs])


class Pass:
    """Runs the primitive of ``pd`` on arrays given per argument in the caller's layouts."""

    def __init__(self, handles, pd, user_mds, outputs):
        """``user_mds``: {argument: the caller's memory descriptor}; ``outputs``: the
        arguments the primitive writes (reordered back after it runs)."""
        lib = self._lib = handles.lib
        self._stream = handles.stream
        self._user, self._before, self._after = {}, [], []
        self._borrowed = []   # (memory, bytes) whose buffer comes from WORKSPACE per call
        args = []
        for arg, user_md in user_mds.items():
            user = self._user[arg] = handles.memory(user_md)
            md = lib.dnnl_primitive_desc_query_md(pd, L.QUERY_EXEC_ARG_MD, arg)
            if lib.dnnl_memory_desc_equal(md, user_md):
                args.append((arg, user))
                continue
            inner = handles.memory(md)
            self._borrowed.append((inner, lib.dnnl_memory_desc_get_size(md)))
            args.append((arg, inner))
            if arg in outputs:
                self._after.append(self._reorder(handles, md, user_md, inner, user))
            else:
                self._before.append(self._reorder(handles, user_md, md, user, inner))
        scratch = lib.dnnl_primitive_desc_query_md(pd, L.QUERY_SCRATCHPAD_MD, 0)
        if scratch and lib.dnnl_memory_desc_get_size(scratch):
            pad = handles.memory(scratch)
            self._borrowed.append((pad, lib.dnnl_memory_desc_get_size(scratch)))
            args.append((L.ARG_SCRATCHPAD, pad))
        self._steps = self._before + [(handles.primitive(pd), _exec_args(args))] + self._after
        self.implementation = _impl_info(lib, pd)
        self.reorders = len(self._before) + len(self._after)
        self._sizes = [size for _, size in self._borrowed]

    def _reorder(self, handles, src_md, dst_md, src, dst):
        eng = handles.engine
        pd = handles.primitive_desc(self._lib.dnnl_reorder_primitive_desc_create,
                                    src_md, eng, dst_md, eng, None)
        return handles.primitive(pd), _exec_args([(L.ARG_SRC, src), (L.ARG_DST, dst)])

    def run(self, arrays):
        """Run on ``arrays`` {argument: C-contiguous float32 ndarray}, one per user argument."""
        lib, stream = self._lib, self._stream
        with WORKSPACE.lock:   # the memories' pointers are set per call
            addresses = WORKSPACE.addresses(self._sizes)
            for (mem, _), address in zip(self._borrowed, addresses):
                lib.dnnl_memory_set_data_handle(mem, address)
            for arg, a in arrays.items():
                lib.dnnl_memory_set_data_handle(self._user[arg], a.ctypes.data)
            for prim, args in self._steps:
                lib.dnnl_primitive_execute(prim, stream, len(args), args)
            lib.dnnl_stream_wait(stream)


def _impl_info(lib, pd):
    name = ctypes.c_char_p()
    lib.dnnl_primitive_desc_query(pd, L.QUERY_IMPL_INFO_STR, 0, ctypes.byref(name))
    return name.value.decode() if name.value else "?"
