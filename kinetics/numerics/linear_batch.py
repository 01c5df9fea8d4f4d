"""numba kernel: the exact affine solution for many parameter sets at once (ensembles).

One compiled call solves x' = A_s x + b_s from x_s(0) for every set s of a range of sets, the
ranges on the cores in parallel (:func:`kinetics.numerics.jit.run_chunks`): LAPACK's dgeev through numba's own binding (the one ``np.linalg.eig``
uses inside numba), then the eigen kernel of :mod:`kinetics.numerics.linear_kernel` that a
single simulation runs (same decomposition, same divided differences, same conditioning
check), so an ensemble agrees with single simulations to rounding. A set whose eigenvector
matrix is too ill-conditioned (or whose dgeev fails) is flagged, not solved; the caller then
solves those sets by :func:`solve_sets_expm`: the matrix exponential of the augmented matrix
[[A, b], [0, 0]] stepped from one output time to the next by the compiled kernel a single
simulation runs (:func:`kinetics.numerics.linear_kernel.expm_solve`, one call per set), so again
the same numbers, the sets in parallel over the cores.
"""

from __future__ import annotations

import numpy as np

from .jit import jit, lapack_dgeev, run_chunks
from .linear import distinct_steps
from .linear_kernel import eigen_solve, eigen_solve_real, expm_solve

__all__ = ["solve_sets", "solve_sets_expm"]

_rgeev = lapack_dgeev()
_KIND, _NO, _YES = ord("d"), ord("N"), ord("V")


SOLVED, DECLINED, COMPLEX = 1, 0, 2     # the outcome of a set in the kernels below


@jit
def _decompose(A, wr, wi, vr_t):
    """dgeev of A into wr, wi and vr_t (column-major V: row j of vr_t is eigenvector j)."""
    n = A.shape[0]
    a = np.asfortranarray(A)
    vl = np.empty((n, 1))
    return _rgeev(_KIND, _NO, _YES, n, a.ctypes, n, wr.ctypes, wi.ctypes, vl.ctypes, 1, vr_t.ctypes, n)


@jit
def _solve_real_sets(A, b, x0, taus, max_condition, X, outcome):
    """The sets whose spectrum is real; the others are marked COMPLEX and left for
    :func:`_solve_complex_sets` (a kernel of its own: it compiles only when a model needs it)."""
    n = A.shape[1]
    wr = np.empty(n)
    wi = np.empty(n)
    vr_t = np.empty((n, n))
    dA = np.zeros((0, n, n))
    db = np.zeros((0, n))
    s0 = np.zeros((n, 0))
    S = np.zeros((0, 0, 0))
    for s in range(A.shape[0]):
        if _decompose(A[s], wr, wi, vr_t) != 0:
            outcome[s] = DECLINED
            continue
        complex_spectrum = False
        for j in range(n):
            if wi[j] != 0.0:
                complex_spectrum = True
        if complex_spectrum:
            outcome[s] = COMPLEX
        elif eigen_solve_real(wr, np.ascontiguousarray(vr_t.T), b[s], x0[s], taus, dA, db, s0, max_condition, X[s], S):
            outcome[s] = SOLVED
        else:
            outcome[s] = DECLINED


@jit
def _solve_complex_sets(A, b, x0, taus, max_condition, X, outcome):
    """The sets of a complex spectrum, in complex arithmetic (as a single simulation)."""
    n = A.shape[1]
    wr = np.empty(n)
    wi = np.empty(n)
    vr_t = np.empty((n, n))
    dA = np.zeros((0, n, n))
    db = np.zeros((0, n))
    s0 = np.zeros((n, 0))
    S = np.zeros((0, 0, 0))
    for s in range(A.shape[0]):
        if _decompose(A[s], wr, wi, vr_t) != 0:
            outcome[s] = DECLINED
        elif eigen_solve(wr, wi, vr_t.T, b[s], x0[s], taus, dA, db, s0, max_condition, X[s], S):
            outcome[s] = SOLVED
        else:
            outcome[s] = DECLINED


#: Work (sets times n cubed, the order of a decomposition) of the smallest range of sets given to
#: a thread: handing out less costs more than it saves (1000 sets of 6 states; 16 of 24; 1 of 96).
PARALLEL_MIN_WORK = 1000 * 6 ** 3


def solve_sets(A, b, x0, taus, max_condition, X, ok):
    """For every set s: X[s] (m, n) = x(taus) of x' = A[s] x + b[s], x(0) = x0[s]; ok[s] False
    where the eigen path declines (X[s] then untouched). A (N, n, n), b and x0 (N, n)."""
    from .compile_notice import announce_compilation
    N, n = A.shape[0], A.shape[1]
    min_chunk = max(1, PARALLEL_MIN_WORK // max(1, n) ** 3)
    outcome = np.empty(N, dtype=np.int64)
    announce_compilation(_solve_real_sets, "the ensemble exact-solution")
    run_chunks(lambda s, e: _solve_real_sets(A[s:e], b[s:e], x0[s:e], taus, max_condition, X[s:e], outcome[s:e]),
               N, min_chunk)
    rest = np.flatnonzero(outcome == COMPLEX)
    if len(rest):
        announce_compilation(_solve_complex_sets, "the ensemble exact-solution")
        Xc = np.empty((len(rest),) + X.shape[1:])
        oc = np.empty(len(rest), dtype=np.int64)
        Ac, bc, xc = np.ascontiguousarray(A[rest]), np.ascontiguousarray(b[rest]), np.ascontiguousarray(x0[rest])
        run_chunks(lambda s, e: _solve_complex_sets(Ac[s:e], bc[s:e], xc[s:e], taus, max_condition, Xc[s:e], oc[s:e]),
                   len(rest), min_chunk)
        X[rest[oc == SOLVED]] = Xc[oc == SOLVED]
        outcome[rest] = oc
    ok[:] = outcome == SOLVED


# ----------------------------------------------------------------- the matrix exponential

def solve_sets_expm(A, b, x0, taus, X):
    """For every set s: X[s] (m, n) = x(taus) of x' = A[s] x + b[s], x(0) = x0[s], by the
    matrix exponential (exact to rounding whatever the conditioning of the eigenvectors; the
    single simulation's kernel, so its numbers), in parallel over the sets. A (N, n, n), b and
    x0 (N, n), X (N, m, n) written (non-finite values are left for the caller's check)."""
    from .compile_notice import announce_compilation
    steps, step_index = distinct_steps(np.asarray(taus, dtype=float))
    announce_compilation(expm_solve, "the matrix-exponential")
    A = np.ascontiguousarray(A, dtype=float)
    b = np.ascontiguousarray(b, dtype=float)
    x0 = np.ascontiguousarray(x0, dtype=float)
    n = A.shape[1]
    none = (np.zeros((0, n, n)), np.zeros((0, n)), np.zeros((n, 0)))
    S = np.zeros((len(step_index), n, 0))

    def sets(start, stop):
        # one compiled call per set, not a kernel looping over them: a kernel calling expm_solve
        # would compile it a second time into its own module (a minute); a set here costs
        # milliseconds of matrix products, the Python call microseconds
        for s in range(start, stop):
            expm_solve(A[s], b[s], x0[s], steps, step_index, *none, X[s], S)
    run_chunks(sets, A.shape[0])
