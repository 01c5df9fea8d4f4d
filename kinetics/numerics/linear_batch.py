"""numba kernel: the exact affine solution for many parameter sets at once (ensembles).

One compiled call solves x' = A_s x + b_s from x_s(0) for every set s of a range of sets, the
ranges on the cores in parallel (:func:`kinetics.numerics.jit.run_chunks`): LAPACK's dgeev through numba's own binding (the one ``np.linalg.eig``
uses inside numba), then the eigen kernel of :mod:`kinetics.numerics.linear_kernel` that a
single simulation runs (same decomposition, same divided differences, same conditioning
check), so an ensemble agrees with single simulations to rounding. A set whose eigenvector
matrix is too ill-conditioned (or whose dgeev fails) is flagged, not solved; the caller then
solves those sets by :func:`solve_sets_expm`: the matrix exponential of the augmented matrix
[[A, b], [0, 0]] stepped from one output time to the next (as
:func:`kinetics.numerics.linear.solve_affine` does for a single simulation), here by a compiled
scaling-and-squaring Padé approximant (:func:`expm_pade`), in parallel over the sets.
"""

from __future__ import annotations

import math

import numpy as np
from .jit import jit, lapack_dgeev, run_chunks

from .linear_kernel import eigen_solve, eigen_solve_real

__all__ = ["solve_sets", "solve_sets_expm", "expm_pade", "step_plan"]

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
# Scaling and squaring with Padé approximants of degree 3, 5, 7, 9 or 13: N. J. Higham, "The
# scaling and squaring method for the matrix exponential revisited", SIAM J. Matrix Anal. Appl.
# 26(4), 1179-1193 (2005), Algorithm 2.3 (the theta_m bounds of its Table 2.3, the
# coefficients b_j of the [m/m] Padé approximant of exp). Backward error at most the unit
# roundoff in exact arithmetic; scipy's expm (Al-Mohy and Higham 2009) refines the choice of
# the scaling for very non-normal matrices, so the two agree to rounding, not bit for bit.
_THETA = (1.495585217958292e-2, 2.539398330063230e-1, 9.504178996162932e-1, 2.097847961257068,
          5.371920351148152)
_PADE3 = (120.0, 60.0, 12.0, 1.0)
_PADE5 = (30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0)
_PADE7 = (17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0)
_PADE9 = (17643225600.0, 8821612800.0, 2075673600.0, 302702400.0, 30270240.0, 2162160.0, 110880.0,
          3960.0, 90.0, 1.0)
_PADE13 = (64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
           129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0,
           960960.0, 16380.0, 182.0, 1.0)


@jit
def _norm1(A):
    """The 1-norm (largest column sum of magnitudes)."""
    n = A.shape[0]
    best = 0.0
    for j in range(n):
        col = 0.0
        for i in range(n):
            col += abs(A[i, j])
        if col > best or col != col:
            best = col
    return best


@jit
def _pade_low(A, b, n_terms):
    """U, V of the [m/m] Padé approximant, m = 2*n_terms - 1 in (3, 5, 7, 9): from even powers."""
    n = A.shape[0]
    A2 = np.dot(A, A)
    U0 = np.zeros((n, n))
    V = np.zeros((n, n))
    P = np.eye(n)                      # A^(2k)
    for k in range(n_terms):
        for i in range(n):
            for j in range(n):
                U0[i, j] += b[2 * k + 1] * P[i, j]
                V[i, j] += b[2 * k] * P[i, j]
        if k + 1 < n_terms:
            P = np.dot(P, A2)
    return np.dot(A, U0), V


@jit
def expm_pade(A):
    """exp(A) of a square float64 matrix by scaling and squaring (Higham 2005, above)."""
    n = A.shape[0]
    norm = _norm1(A)
    if not math.isfinite(norm):
        return np.full((n, n), np.nan)
    if norm <= _THETA[0]:
        U, V = _pade_low(A, np.array(_PADE3), 2)
        s = 0
    elif norm <= _THETA[1]:
        U, V = _pade_low(A, np.array(_PADE5), 3)
        s = 0
    elif norm <= _THETA[2]:
        U, V = _pade_low(A, np.array(_PADE7), 4)
        s = 0
    elif norm <= _THETA[3]:
        U, V = _pade_low(A, np.array(_PADE9), 5)
        s = 0
    else:
        s = max(0, int(math.ceil(math.log2(norm / _THETA[4]))))
        As = A * (0.5 ** s)
        b = _PADE13
        A2 = np.dot(As, As)
        A4 = np.dot(A2, A2)
        A6 = np.dot(A4, A2)
        W1 = np.empty((n, n))
        W2 = np.empty((n, n))
        Z1 = np.empty((n, n))
        Z2 = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                W1[i, j] = b[13] * A6[i, j] + b[11] * A4[i, j] + b[9] * A2[i, j]
                W2[i, j] = b[7] * A6[i, j] + b[5] * A4[i, j] + b[3] * A2[i, j]
                Z1[i, j] = b[12] * A6[i, j] + b[10] * A4[i, j] + b[8] * A2[i, j]
                Z2[i, j] = b[6] * A6[i, j] + b[4] * A4[i, j] + b[2] * A2[i, j]
            W2[i, i] += b[1]
            Z2[i, i] += b[0]
        W = np.dot(A6, W1) + W2
        U = np.dot(As, W)
        V = np.dot(A6, Z1) + Z2
    E = np.ascontiguousarray(np.linalg.solve(V - U, V + U))   # LAPACK returns Fortran order
    for _ in range(s):
        E = np.dot(E, E)
    return E


@jit
def _expm_one(A, b, x0, s, step_values, step_index, X):
    """X[s] (m, n) = the states of set s at the output times: z = [x, 1/g] stepped by
    exp(M * step) with M = [[A, g b], [0, 0]], one exponential per distinct step length (as
    linear._propagate). g, a power of 2 (so exact), brings the column g b to the size of A's
    columns: the inflow (e.g. 1000 particles/h against rates of 1/h) would otherwise set the
    1-norm and with it the number of squarings (each a matrix product)."""
    n = A.shape[1]
    M = np.zeros((n + 1, n + 1))
    norm_b = 0.0
    for i in range(n):
        for j in range(n):
            M[i, j] = A[s, i, j]
        norm_b += abs(b[s, i])
    norm_a = _norm1(M)
    g = 1.0
    if norm_b > 0.0 and norm_a > 0.0 and math.isfinite(norm_a) and math.isfinite(norm_b):
        g = 2.0 ** round(math.log2(norm_a / norm_b))
    for i in range(n):
        M[i, n] = g * b[s, i]
    E = np.empty((step_values.shape[0], n + 1, n + 1))
    have = np.zeros(step_values.shape[0], dtype=np.bool_)
    z = np.empty(n + 1)
    for i in range(n):
        z[i] = x0[s, i]
    z[n] = 1.0 / g
    for k in range(step_index.shape[0]):
        u = step_index[k]
        if u >= 0:
            if not have[u]:
                E[u] = expm_pade(M * step_values[u])
                have[u] = True
            z = np.dot(E[u], z)
        for i in range(n):
            X[s, k, i] = z[i]


@jit
def _expm_sets(A, b, x0, step_values, step_index, X):
    for s in range(A.shape[0]):
        _expm_one(A, b, x0, s, step_values, step_index, X)


def step_plan(taus):
    """(step_values, step_index) of the output times ``taus`` (sorted, >= 0): the distinct step
    lengths between consecutive times (from 0), equal up to 4 ulps of the last time grouped as
    :func:`kinetics.numerics.linear.solve_affine` groups them, and for each time the index of
    its step (-1 for a step of 0: the state does not move)."""
    taus = np.asarray(taus, dtype=float)
    steps = np.diff(np.concatenate([[0.0], taus]))
    quantum = 4 * np.finfo(float).eps * max(float(taus[-1]) if len(taus) else 1.0, 1e-300)
    keys = np.round(steps / quantum)
    values, index, first = [], np.full(len(taus), -1, dtype=np.int64), {}
    for k, (step, key) in enumerate(zip(steps, keys)):
        if step > 0:
            if key not in first:
                first[key] = len(values)
                values.append(step)
            index[k] = first[key]
    return np.array(values, dtype=float), index


def solve_sets_expm(A, b, x0, taus, X):
    """For every set s: X[s] (m, n) = x(taus) of x' = A[s] x + b[s], x(0) = x0[s], by the
    matrix exponential (exact to rounding whatever the conditioning of the eigenvectors), in
    parallel over the sets. A (N, n, n), b and x0 (N, n), X (N, m, n) written."""
    from .compile_notice import announce_compilation
    step_values, step_index = step_plan(taus)
    announce_compilation(_expm_sets, "the ensemble matrix-exponential")
    A = np.ascontiguousarray(A, dtype=float)
    b = np.ascontiguousarray(b, dtype=float)
    x0 = np.ascontiguousarray(x0, dtype=float)
    run_chunks(lambda s, e: _expm_sets(A[s:e], b[s:e], x0[s:e], step_values, step_index, X[s:e]), A.shape[0])
