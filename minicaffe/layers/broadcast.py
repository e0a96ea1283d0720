"""Arithmetic between an array viewed as (outer, dim, inner) and vectors of length ``dim``.

BatchNorm works on (N, C, H*W...) against per-channel vectors, Scale and Bias on the slice of
axes their parameter covers. ``Broadcast`` does that arithmetic vectorised: per-``dim`` sums
and dot products as BLAS matrix-vector products (or a row-wise dot), elementwise passes
written into preallocated outputs. When the vector would broadcast over short inner rows it
is first expanded to a (dim * inner) row (cheap: at most 1/8 of the activation), so every
elementwise pass runs over long contiguous rows.
"""
import numpy as np

# Expand a per-dim vector to a full (dim * inner) row only when the array has at least this
# many rows of it, so the expanded copy stays small next to the activation.
_EXPAND_MIN_OUTER = 8


def _rowdot(xp, a, b):
    """Dot product of each row of two 2-D arrays."""
    vecdot = getattr(xp, "vecdot", None)
    if vecdot is not None:
        return vecdot(a, b)
    return xp.einsum("ij,ij->i", a, b)


class Broadcast:
    """Arithmetic between an array of shape (outer, dim, inner) and length-``dim`` vectors."""

    def __init__(self, outer, dim, inner, xp, dtype, slots=3):
        self.outer, self.dim, self.inner = outer, dim, inner
        self.xp, self.dtype = xp, np.dtype(dtype)
        self.count = outer * dim * inner
        if inner == 1:
            self.mode, self.shape = "rows", (outer, dim)
        elif dim == 1:
            self.mode, self.shape = "scalar", (outer, inner)
        elif outer >= _EXPAND_MIN_OUTER:
            self.mode, self.shape = "expand", (outer, dim * inner)
            self._bufs = xp.empty((slots, dim, inner), dtype=self.dtype)
        else:
            self.mode, self.shape = "bcast", (outer, dim, inner)
        # != 1, not > 1: an empty batch (0) sums through a ones(0) product to zeros
        self._ones_inner = xp.ones(inner, dtype=self.dtype) if inner != 1 else None
        self._ones_outer = xp.ones(outer, dtype=self.dtype) if outer != 1 else None

    def view(self, a):
        """``a`` (any shape of the right count) as the array this object broadcasts against."""
        return a.reshape(self.shape)

    def vec(self, v, slot):
        """Vector ``v`` (length dim) shaped to broadcast against ``view`` arrays."""
        v = v.reshape(self.dim).astype(self.dtype, copy=False)
        if self.mode == "rows":
            return v
        if self.mode == "scalar":
            return v.reshape(1, 1)
        if self.mode == "expand":
            buf = self._bufs[slot]
            buf[...] = v[:, None]
            return buf.reshape(self.dim * self.inner)
        return v.reshape(self.dim, 1)

    def sum(self, a):
        """Per-dim sum over the outer and inner axes: shape (dim,)."""
        outer, dim, inner = self.outer, self.dim, self.inner
        if inner == 1:
            a2 = a.reshape(outer, dim)
            return self._ones_outer @ a2 if outer != 1 else a2[0].copy()
        rows = outer * dim
        if rows == 1:
            return a.reshape(1, inner).sum(axis=1)
        r = a.reshape(rows, inner) @ self._ones_inner
        return r if outer == 1 else self._ones_outer @ r.reshape(outer, dim)

    def dot(self, a, b):
        """Per-dim sum of a * b over the outer and inner axes: shape (dim,)."""
        xp = self.xp
        outer, dim, inner = self.outer, self.dim, self.inner
        if inner == 1:
            a2, b2 = a.reshape(outer, dim), b.reshape(outer, dim)
            return a2[0] * b2[0] if outer == 1 else xp.einsum("ij,ij->j", a2, b2)
        rows = outer * dim
        if rows == 1:
            return xp.dot(a.reshape(-1), b.reshape(-1)).reshape(1)
        r = _rowdot(xp, a.reshape(rows, inner), b.reshape(rows, inner))
        return r if outer == 1 else self._ones_outer @ r.reshape(outer, dim)


def same_layout(bc, outer, dim, inner, xp, dtype):
    """True when ``bc`` (a Broadcast or None) already serves this layout."""
    return (bc is not None and bc.outer == outer and bc.dim == dim and bc.inner == inner
            and bc.xp is xp and bc.dtype == dtype)
