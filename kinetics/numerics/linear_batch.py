"""numba kernel: the exact affine solution for many parameter sets at once (ensembles).

One compiled call solves x' = A_s x + b_s from x_s(0) for every set s, in parallel over the
sets (``prange``): LAPACK's dgeev through numba's own binding (the one ``np.linalg.eig``
uses inside numba), then the eigen kernel of :mod:`kinetics.numerics.linear_kernel` that a
single simulation runs (same decomposition, same divided differences, same conditioning
check), so an ensemble agrees with single simulations to rounding. A set whose eigenvector
matrix is too ill-conditioned (or whose dgeev fails) is flagged, not solved: the caller
solves it by the matrix exponential (:func:`kinetics.numerics.linear.solve_affine`).
"""

from __future__ import annotations

import numpy as np
from .jit import jit, lapack_dgeev, prange

from .linear_kernel import eigen_solve, eigen_solve_real

__all__ = ["solve_sets"]

_rgeev = lapack_dgeev()
_KIND, _NO, _YES = ord("d"), ord("N"), ord("V")


@jit
def _solve_one(A, b, x0, taus, max_condition, X):
    n = A.shape[0]
    a = np.asfortranarray(A)
    wr = np.empty(n)
    wi = np.empty(n)
    vl = np.empty((n, 1))
    vr_t = np.empty((n, n))        # column-major V: row j of vr_t is eigenvector j
    info = _rgeev(_KIND, _NO, _YES, n, a.ctypes, n, wr.ctypes, wi.ctypes, vl.ctypes, 1, vr_t.ctypes, n)
    if info != 0:
        return False
    dA = np.zeros((0, n, n))
    db = np.zeros((0, n))
    s0 = np.zeros((n, 0))
    S = np.zeros((0, 0, 0))
    complex_spectrum = False
    for j in range(n):
        if wi[j] != 0.0:
            complex_spectrum = True
    if complex_spectrum:
        return eigen_solve(wr, wi, vr_t.T, b, x0, taus, dA, db, s0, max_condition, X, S)
    return eigen_solve_real(wr, np.ascontiguousarray(vr_t.T), b, x0, taus, dA, db, s0, max_condition, X, S)


@jit(parallel=True)
def _solve_parallel(A, b, x0, taus, max_condition, X, ok):
    for s in prange(A.shape[0]):
        ok[s] = _solve_one(A[s], b[s], x0[s], taus, max_condition, X[s])


@jit
def _solve_serial(A, b, x0, taus, max_condition, X, ok):
    for s in range(A.shape[0]):
        ok[s] = _solve_one(A[s], b[s], x0[s], taus, max_condition, X[s])


#: Below this many sets one thread does the work: waking numba's thread pool costs more.
PARALLEL_MIN_SETS = 1000


def solve_sets(A, b, x0, taus, max_condition, X, ok):
    """For every set s: X[s] (m, n) = x(taus) of x' = A[s] x + b[s], x(0) = x0[s]; ok[s] False
    where the eigen path declines (X[s] then untouched). A (N, n, n), b and x0 (N, n)."""
    from .compile_notice import announce_compilation
    kernel = _solve_parallel if A.shape[0] >= PARALLEL_MIN_SETS else _solve_serial
    announce_compilation(kernel, f"the ensemble exact-solution ({'parallel' if kernel is _solve_parallel else 'serial'})")
    kernel(A, b, x0, taus, max_condition, X, ok)
