"""oneDNN's C library (libdnnl.so.3, 3.x API) through ctypes: finding it, its C types, its calls.

The library comes from the ``onednn-cpu-gomp`` wheel (found through the distribution's file
list) or from the path in ``MINICAFFE_ONEDNN_LIBRARY``. ``load()`` binds every function used
here with its C signature and, for those returning a ``dnnl_status_t``, a check that turns a
non-success status into ``OneDNNError`` naming the call. One CPU engine and one stream serve
the whole process; both are made on first use.
"""
import ctypes
import os
import threading
from importlib import metadata

ENV_VAR = "MINICAFFE_ONEDNN_LIBRARY"
DISTRIBUTION = "onednn-cpu-gomp"
LIBRARY_NAME = "libdnnl.so.3"
MAJOR_VERSION = 3
INSTALL_HINT = 'pip install "onednn-cpu-gomp==2023.2.0"'

MAX_NDIMS = 12
Dims = ctypes.c_int64 * MAX_NDIMS
MEMORY_ALLOCATE = ctypes.c_void_p(2 ** 64 - 1)   # DNNL_MEMORY_ALLOCATE, (void *)-1

# Enumerators from dnnl_types.h / dnnl_common_types.h (oneDNN 3.2; read from the headers).
F32 = 3
CPU_ENGINE = 1
STREAM_DEFAULT_FLAGS = 1
FORWARD_TRAINING = 64
CONVOLUTION_DIRECT = 1
ELTWISE_RELU = 32
SCRATCHPAD_MODE_USER = 1
TAG_ANY, TAG_X, TAG_NCHW, TAG_OIHW, TAG_GOIHW, TAG_NHWC = 1, 2, 5, 5, 6, 22
QUERY_IMPL_INFO_STR = 8
QUERY_SCRATCHPAD_MD = 136
QUERY_EXEC_ARG_MD = 255
ARG_SRC, ARG_DST, ARG_WEIGHTS, ARG_BIAS, ARG_SCRATCHPAD = 1, 17, 33, 41, 80
ARG_DIFF_SRC, ARG_DIFF_DST, ARG_DIFF_WEIGHTS, ARG_DIFF_BIAS = 129, 145, 161, 169

_STATUS = {1: "out of memory", 2: "invalid arguments", 3: "unimplemented",
           4: "last implementation reached", 5: "runtime error", 6: "not required",
           7: "invalid graph", 8: "invalid graph op", 9: "invalid shape",
           10: "invalid data type"}


class OneDNNUnavailable(OSError):
    """oneDNN cannot be used: not installed, the wrong version, or a symbol missing."""


class OneDNNError(RuntimeError):
    """A oneDNN call returned a status other than success."""

    def __init__(self, call, status):
        self.call, self.status = call, status
        super().__init__(f"{call} failed: {_STATUS.get(status, 'unknown status')} "
                         f"(dnnl_status_t {status})")


class ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


class Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                ("gpu_runtime", ctypes.c_uint)]


_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)
_DIMS = ctypes.POINTER(ctypes.c_int64)
_INT, _SIZE, _UINT, _FLOAT = ctypes.c_int, ctypes.c_size_t, ctypes.c_uint, ctypes.c_float

# name -> argument types, for the calls that return a dnnl_status_t.
_STATUS_CALLS = {
    "dnnl_engine_create": [_PP, _INT, _SIZE],
    "dnnl_stream_create": [_PP, _P, _UINT],
    "dnnl_stream_wait": [_P],
    "dnnl_memory_desc_create_with_tag": [_PP, _INT, _DIMS, _INT, _INT],
    "dnnl_memory_desc_destroy": [_P],
    "dnnl_memory_create": [_PP, _P, _P, _P],
    "dnnl_memory_set_data_handle": [_P, _P],
    "dnnl_memory_destroy": [_P],
    "dnnl_primitive_attr_create": [_PP],
    "dnnl_primitive_attr_destroy": [_P],
    "dnnl_primitive_attr_set_scratchpad_mode": [_P, _INT],
    "dnnl_primitive_attr_set_post_ops": [_P, _P],
    "dnnl_post_ops_create": [_PP],
    "dnnl_post_ops_append_eltwise": [_P, _INT, _FLOAT, _FLOAT],
    "dnnl_post_ops_destroy": [_P],
    "dnnl_convolution_forward_primitive_desc_create":
        [_PP, _P, _INT, _INT, _P, _P, _P, _P, _DIMS, _DIMS, _DIMS, _DIMS, _P],
    "dnnl_convolution_backward_data_primitive_desc_create":
        [_PP, _P, _INT, _P, _P, _P, _DIMS, _DIMS, _DIMS, _DIMS, _P, _P],
    "dnnl_convolution_backward_weights_primitive_desc_create":
        [_PP, _P, _INT, _P, _P, _P, _P, _DIMS, _DIMS, _DIMS, _DIMS, _P, _P],
    "dnnl_pooling_forward_primitive_desc_create":
        [_PP, _P, _INT, _INT, _P, _P, _DIMS, _DIMS, _DIMS, _DIMS, _DIMS, _P],
    "dnnl_pooling_backward_primitive_desc_create":
        [_PP, _P, _INT, _P, _P, _DIMS, _DIMS, _DIMS, _DIMS, _DIMS, _P, _P],
    "dnnl_reorder_primitive_desc_create": [_PP, _P, _P, _P, _P, _P],
    "dnnl_primitive_desc_query": [_P, _INT, _INT, _P],
    "dnnl_primitive_desc_destroy": [_P],
    "dnnl_primitive_create": [_PP, _P],
    "dnnl_primitive_execute": [_P, _P, _INT, ctypes.POINTER(ExecArg)],
    "dnnl_primitive_destroy": [_P],
}
# name -> (argument types, result type), for the calls that return a value.
_VALUE_CALLS = {
    "dnnl_version": ([], ctypes.POINTER(Version)),
    "dnnl_primitive_desc_query_md": ([_P, _INT, _INT], _P),
    "dnnl_memory_desc_equal": ([_P, _P], _INT),
    "dnnl_memory_desc_get_size": ([_P], _SIZE),
}

_state = {"lib": None, "error": None, "engine": None, "stream": None}
_lock = threading.Lock()


def _errcheck(status, func, args):
    if status != 0:
        raise OneDNNError(func.__name__, status)
    return status


def library_path():
    """Where libdnnl.so.3 is: ``$MINICAFFE_ONEDNN_LIBRARY``, else the installed wheel's file."""
    override = os.environ.get(ENV_VAR)
    if override:
        if not os.path.isfile(override):
            raise OneDNNUnavailable(f"{ENV_VAR}={override!r} is not a file")
        return override
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        raise OneDNNUnavailable(f"oneDNN is not installed (no {DISTRIBUTION} distribution; "
                                f"{INSTALL_HINT}, or set {ENV_VAR})") from None
    for f in files:
        if f.name == LIBRARY_NAME:
            path = os.path.realpath(f.locate())
            if os.path.isfile(path):
                return path
    raise OneDNNUnavailable(f"the {DISTRIBUTION} distribution lists no {LIBRARY_NAME} "
                            f"that exists on disk (reinstall it: {INSTALL_HINT})")


def _bind(lib):
    for name, argtypes in _STATUS_CALLS.items():
        func = getattr(lib, name)
        func.argtypes, func.restype, func.errcheck = argtypes, ctypes.c_int, _errcheck
    for name, (argtypes, restype) in _VALUE_CALLS.items():
        func = getattr(lib, name)
        func.argtypes, func.restype = argtypes, restype


def _open():
    path = library_path()
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise OneDNNUnavailable(f"cannot load {path}: {e}") from None
    try:
        _bind(lib)
    except AttributeError as e:
        raise OneDNNUnavailable(f"{path} is not a oneDNN {MAJOR_VERSION}.x library: "
                                f"symbol missing ({e})") from None
    v = lib.dnnl_version().contents
    if v.major != MAJOR_VERSION:
        raise OneDNNUnavailable(f"{path} is oneDNN {v.major}.{v.minor}.{v.patch}; "
                                f"version {MAJOR_VERSION}.x is required ({INSTALL_HINT})")
    return lib


def load():
    """The loaded library (cached), or ``OneDNNUnavailable`` saying why it cannot be used."""
    with _lock:
        if _state["lib"] is None and _state["error"] is None:
            try:
                _state["lib"] = _open()
            except OneDNNUnavailable as e:
                _state["error"] = e
        if _state["error"] is not None:
            raise _state["error"]
        return _state["lib"]


def available():
    """True when ``load()`` succeeds (the answer is cached with the library)."""
    try:
        load()
    except OneDNNUnavailable:
        return False
    return True


def reset():
    """Forget the cached library, error, engine and stream (tests that change ``ENV_VAR``)."""
    with _lock:
        _state.update(lib=None, error=None, engine=None, stream=None)


def version():
    """(major, minor, patch) of the loaded library."""
    v = load().dnnl_version().contents
    return v.major, v.minor, v.patch


def engine():
    """The process's CPU engine (made on first use; lives as long as the process)."""
    lib = load()
    with _lock:
        if _state["engine"] is None:
            handle = ctypes.c_void_p()
            lib.dnnl_engine_create(ctypes.byref(handle), CPU_ENGINE, 0)
            _state["engine"] = handle
        return _state["engine"]


def stream():
    """The process's execution stream on ``engine()`` (in order; made on first use)."""
    eng = engine()
    lib = load()
    with _lock:
        if _state["stream"] is None:
            handle = ctypes.c_void_p()
            lib.dnnl_stream_create(ctypes.byref(handle), eng, STREAM_DEFAULT_FLAGS)
            _state["stream"] = handle
        return _state["stream"]


def dims(values):
    """A ``dnnl_dims_t`` holding ``values`` (the rest zero)."""
    return Dims(*[int(v) for v in values])
