"""Scratch arrays that layers keep between passes, made again only when they stop fitting."""
from .. import backend


def reuse(buf, shape, like, dtype=None):
    """``buf`` if it has ``shape``, ``dtype`` (default ``like``'s) and ``like``'s array module;
    otherwise a new empty array that has them."""
    xp = backend.get_array_module(like)
    dtype = like.dtype if dtype is None else dtype
    if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype or \
            backend.get_array_module(buf) is not xp:
        buf = xp.empty(tuple(shape), dtype=dtype)
    return buf
