"""Exact solution of affine-linear compartment systems dx/dt = A x + b, with forward
parameter sensitivities.

Two methods, chosen per call:

* **Eigendecomposition** (fast path). With A = V diag(lam) V^-1, every state and sensitivity
  is a combination of divided differences of the exponential, e[z_i, z_j] and
  e[z_i, z_j, 0] with z = lam * t, evaluated stably (see :func:`dd1`, :func:`dd2_zero`).
  Zero eigenvalues (sinks that only accumulate) need no special case. Used when the
  eigenvector matrix is well conditioned (kappa_1(V) <= :data:`MAX_EIGEN_CONDITION`).
* **Matrix exponential** of the augmented matrix [[A, b], [0, 0]] (scaling and squaring with
  Padé approximants: scipy's ``expm``, or its algorithm compiled in :mod:`.linear_kernel` when
  numba is there), stepping from one output time to the next and reusing the exponential of
  repeated step lengths. Exact to rounding whatever the non-normality (defective or nearly
  defective A: equal rates in a chain, long non-normal chains). Sensitivities use the block
  matrix [[A, 0, b], [dA, A, db], [0, 0, 0]] per direction.

For the sensitivities s = dx/dtheta along a direction (dA, db):  s' = A s + dA x + db.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import expm
from scipy.linalg.lapack import dgecon as _dgecon, dgeev as _dgeev, dgetrf as _dgetrf, dgetrs as _dgetrs, dlange as _dlange
from scipy.linalg.lapack import zgecon as _zgecon, zgetrf as _zgetrf, zgetrs as _zgetrs, zlange as _zlange

__all__ = ["solve_affine", "affine_solution", "affine_rows", "dd1", "dd2_zero", "MAX_EIGEN_CONDITION"]

#: Above this condition number of the eigenvector matrix the expm path is used instead.
MAX_EIGEN_CONDITION = 1e5
_CLOSE = 1e-5


def _phi1(z):
    """(exp(z) - 1) / z, equal to 1 at z = 0."""
    zero = z == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.expm1(z) / np.where(zero, 1, z)
    return np.where(zero, 1.0, out)


def dd1(a, b):
    """First divided difference of exp: (e^a - e^b)/(a - b), e^a where a == b."""
    swap = b.real > a.real
    p = np.where(swap, b, a)
    q = np.where(swap, a, b)
    return np.exp(p) * _phi1(q - p)


def _dphi1(m):
    """d/dm phi1(m) = e[m, m, 0] = (e^m (m - 1) + 1) / m^2, by series near 0."""
    small = np.abs(m) < 0.2
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        direct = (np.exp(m) * (m - 1) + 1) / np.where(small, 1, m * m)
    series = np.zeros_like(m)
    term_power = np.ones_like(m)
    factorial = 2.0
    for k in range(16):
        series = series + (k + 1) * term_power / factorial
        term_power = term_power * m
        factorial *= (k + 3)
    return np.where(small, series, direct)


def _psi(x, y):
    """e[x, y, 0] for Re x, Re y <= 0 (both shifted by the pivot)."""
    h = x - y
    close = np.abs(h) <= _CLOSE * (1 + np.maximum(np.abs(x), np.abs(y)))
    with np.errstate(invalid="ignore", divide="ignore"):
        far = (_phi1(x) - _phi1(y)) / np.where(close, 1, h)
    return np.where(close, _dphi1(0.5 * (x + y)), far)


def dd2_zero(a, b):
    """Second divided difference of exp at (a, b, 0), stable for close or equal points."""
    zero = np.zeros_like(a)
    # pivot on the point with the largest real part so that the others give no overflow
    a_max = (a.real >= b.real) & (a.real >= 0)
    b_max = (b.real > a.real) & (b.real >= 0)
    pivot = np.where(a_max, a, np.where(b_max, b, zero))
    x = np.where(a_max, b, a) - pivot
    y = np.where(a_max | b_max, zero, b) - pivot
    y = np.where(b_max, zero - pivot, y)
    x = np.where(b_max, a - pivot, x)
    return np.exp(pivot) * _psi(x, y)


_IDENTITY = {}


def _eigen(A):
    """(lam, V, Vinv) of A, or None when V is too ill-conditioned to trust.

    Calls LAPACK directly: numpy's eig costs ~3x more than dgeev itself at these sizes."""
    n = A.shape[0]
    wr, wi, _, vr, info = _dgeev(A, compute_vl=0, overwrite_a=0)
    if info != 0:
        return None
    if wi.any():
        lam = wr + 1j * wi
        V = vr.astype(complex)
        j = 0
        while j < n:
            if wi[j] > 0 and j + 1 < n:
                V[:, j] = vr[:, j] + 1j * vr[:, j + 1]
                V[:, j + 1] = vr[:, j] - 1j * vr[:, j + 1]
                j += 2
            else:
                j += 1
        getrf, getrs, gecon, lange = _zgetrf, _zgetrs, _zgecon, _zlange
    else:
        lam, V = wr, vr
        getrf, getrs, gecon, lange = _dgetrf, _dgetrs, _dgecon, _dlange
    anorm = lange("1", V)
    lu, piv, info = getrf(V)
    if info != 0:
        return None
    rcond, info = gecon(lu, anorm, norm="1")
    if info != 0 or not rcond > 1.0 / MAX_EIGEN_CONDITION:
        return None
    eye = _IDENTITY.get(n)
    if eye is None:
        eye = _IDENTITY[n] = np.eye(n)
    Vinv, info = getrs(lu, piv, eye)
    return lam, V, Vinv


_linear_kernel = False  # imported on first use: numba is optional and slow to import


def _kernel():
    global _linear_kernel
    if _linear_kernel is False:
        try:
            from . import linear_kernel as kernel
        except ImportError:  # pragma: no cover - exercised where numba is absent
            kernel = None
        _linear_kernel = kernel
    return _linear_kernel

_EMPTY3 = np.zeros((0, 0, 0))


def _announced(kernel, group="the exact-solution"):
    """``kernel`` (a dispatcher of linear_kernel), after the first-use compile notice check."""
    from .compile_notice import announce_compilation
    announce_compilation(kernel, group)
    return kernel


def _solve_eigen_compiled(A, b, x0, taus, dA, db, s0):
    """The eigen path in one numba call; None when V is ill-conditioned (use expm)."""
    wr, wi, _, vr, info = _dgeev(A, compute_vl=0, overwrite_a=0)
    if info != 0:
        return None
    n, m = len(b), len(taus)
    X = np.empty((m, n))
    if dA is None:
        K = 0
        dA, db, s0 = np.zeros((0, n, n)), np.zeros((0, n)), np.zeros((n, 0))
        S = _EMPTY3
    else:
        K = dA.shape[0]
        S = np.empty((m, n, K))
    args = (np.ascontiguousarray(b, dtype=float), np.ascontiguousarray(x0, dtype=float), taus,
            np.ascontiguousarray(dA, dtype=float), np.ascontiguousarray(db, dtype=float),
            np.ascontiguousarray(s0, dtype=float), MAX_EIGEN_CONDITION, X, S)
    if wi.any():
        ok = _announced(_linear_kernel.eigen_solve)(wr, wi, vr, *args)
    else:  # real spectrum: real arithmetic
        ok = _announced(_linear_kernel.eigen_solve_real)(wr, np.ascontiguousarray(vr), *args)
    if not ok:
        return None
    return X, (S if K else None)


def affine_rows(A, b, x0, taus, dA_full, db_full, D, s0, series, t_index):
    """Data rows of the exact solution in one compiled call (the fitting inner loop).

    ``series`` is (C, e, dC, de, index): row r reads C[index[r]] . x(taus[t_index[r]]) +
    e[index[r]]; dC, de are the parameter derivatives of C, e (empty when constant). Returns
    the values f (N,) and their sensitivities J (N, K) along the directions
    dA = sum_l dA_full[l] D[l, k] (likewise db), from s(0) = s0 (n, K); or None where the
    compiled eigen path does not apply (numba missing, ill-conditioned eigenvectors, a
    non-finite value): callers then use :func:`solve_affine`."""
    if _kernel() is None:
        return None
    wr, wi, _, vr, info = _dgeev(A, compute_vl=0, overwrite_a=0)
    if info != 0:
        return None
    C, e, dC, de, index = series
    N, K = len(t_index), D.shape[1]
    f, J = np.empty(N), np.empty((N, K))
    vr = np.ascontiguousarray(vr)
    if wi.any():
        ok = _announced(_linear_kernel.affine_rows_complex)(wr, wi, vr, b, x0, taus, dA_full, db_full, D, s0, C, e, dC, de, index,
                                                t_index, MAX_EIGEN_CONDITION, f, J)
    else:   # real spectrum: real arithmetic (only this kernel compiles for most models)
        ok = _announced(_linear_kernel.affine_rows_real)(wr, vr, b, x0, taus, dA_full, db_full, D, s0, C, e, dC, de, index,
                                             t_index, MAX_EIGEN_CONDITION, f, J)
    if not ok:
        # ill-conditioned eigenvectors (a defective A: equal rates in a chain), or a value that is
        # not finite: the same rows by the matrix exponential (a non-finite value stays one)
        steps, step_index = _distinct_steps(taus)
        _announced(_linear_kernel.expm_solve, "the matrix-exponential")
        ok = _linear_kernel.affine_rows_expm(np.ascontiguousarray(A, dtype=float), b, x0, taus, steps, step_index,
                                            dA_full, db_full, D, s0, C, e, dC, de, index, t_index, f, J)
    return (f, J) if ok else None


def solve_affine(A, b, x0, taus, dA=None, db=None, s0=None, method="auto"):
    """See :func:`_solve_affine`; output times at 0 return the initial values exactly."""
    X, S, used = _solve_affine(A, b, x0, taus, dA, db, s0, method)
    at_start = np.asarray(taus) == 0
    if at_start.any():
        X[at_start] = x0
        if S is not None:
            S[at_start] = s0
    return X, S, used


def _solve_affine(A, b, x0, taus, dA=None, db=None, s0=None, method="auto"):
    """States (and sensitivities) of x' = A x + b at times ``taus`` (sorted, >= 0) from x(0) = x0.

    ``dA`` (K, n, n), ``db`` (K, n) and ``s0`` (n, K) give K sensitivity directions. Returns
    ``(X, S, method_used)`` with X (m, n) and S (m, n, K) or None.
    """
    taus = np.ascontiguousarray(taus, dtype=float)
    want_sens = dA is not None
    if method in ("auto", "eigen") and _kernel() is not None:
        out = _solve_eigen_compiled(A, b, x0, taus, dA, db, s0)
        if out is not None:
            return (*out, "eigen")
        if method == "eigen":
            raise np.linalg.LinAlgError("eigenvector matrix is ill-conditioned")
    elif method in ("auto", "eigen", "eigen-numpy"):
        eig = _eigen(A)
        if eig is not None:
            return (*_solve_eigen(eig, b, x0, taus, dA, db, s0, want_sens), "eigen")
        if method in ("eigen", "eigen-numpy"):
            raise np.linalg.LinAlgError("eigenvector matrix is ill-conditioned")
    return (*_solve_expm(A, b, x0, taus, dA, db, s0, want_sens), "expm")


def _solve_eigen(eig, b, x0, taus, dA, db, s0, want_sens):
    lam, V, Vinv = eig
    c = Vinv @ x0
    d = Vinv @ b
    z = taus[:, None] * lam[None, :]                     # (m, n)
    ez = np.exp(z)
    # integral_0^t e^{lam s} ds = t * e[z, 0]
    if lam.real.max() <= 0:                              # every compartment model without growth
        zero = lam == 0
        e10 = np.where(zero, taus[:, None], np.expm1(z) / np.where(zero, 1, lam))
    else:
        e10 = dd1(z, np.zeros_like(z)) * taus[:, None]
    Y = ez * c + e10 * d
    X = Y @ V.T
    if np.iscomplexobj(X):
        X = X.real
    if not want_sens:
        return X, None
    G = Vinv @ dA @ V                                    # (K, n, n)
    g = db @ Vinv.T                                      # (K, n)
    sigma0 = Vinv @ s0                                   # (n, K)
    zi, zj = z[:, :, None], z[:, None, :]
    W = dd1(zi, zj) * (taus[:, None, None] * c[None, None, :])
    W = W + dd2_zero(zi, zj) * (taus[:, None, None] ** 2 * d[None, None, :])
    Sigma = ez[:, :, None] * sigma0[None, :, :] + e10[:, :, None] * g.T[None, :, :]
    Sigma = Sigma + np.einsum("kij,tij->tik", G, W)
    S = np.einsum("ai,tik->tak", V, Sigma)
    if np.iscomplexobj(S):
        S = S.real
    return X, S


def _step_keys(taus):
    steps = np.diff(np.concatenate([[0.0], taus]))
    quantum = 4 * np.finfo(float).eps * max(float(taus[-1]) if len(taus) else 1.0, 1e-300)
    return steps, np.round(steps / quantum) if quantum > 0 else steps


def _distinct_steps(taus):
    """(steps, step_index): the distinct step lengths between consecutive output times (from 0)
    and, per time, the index of its step (-1: no step), for the compiled expm path."""
    steps, keys = _step_keys(taus)
    positive = steps > 0
    unique_keys, first, inverse = np.unique(keys[positive], return_index=True, return_inverse=True)
    step_index = np.full(len(taus), -1, dtype=np.int64)
    step_index[positive] = inverse
    return np.ascontiguousarray(steps[positive][first], dtype=float), step_index


def _propagate(M, z0, taus):
    steps, keys = _step_keys(taus)
    out = np.empty((len(taus), len(z0)))
    cache = {}
    z = z0
    for k, (step, key) in enumerate(zip(steps, keys)):
        if step > 0:
            E = cache.get(key)
            if E is None:
                E = cache[key] = expm(M * step)
            z = E @ z
        out[k] = z
    return out


def _solve_expm(A, b, x0, taus, dA, db, s0, want_sens):
    n = len(b)
    if _kernel() is not None:
        steps, step_index = _distinct_steps(taus)
        K = dA.shape[0] if want_sens else 0
        X, S = np.empty((len(taus), n)), np.empty((len(taus), n, K))
        args = (np.ascontiguousarray(A, dtype=float), np.ascontiguousarray(b, dtype=float),
                np.ascontiguousarray(x0, dtype=float), steps, step_index)
        if want_sens:
            args += (np.ascontiguousarray(dA, dtype=float), np.ascontiguousarray(db, dtype=float),
                     np.ascontiguousarray(s0, dtype=float))
        else:
            args += (np.zeros((0, n, n)), np.zeros((0, n)), np.zeros((n, 0)))
        _announced(_linear_kernel.expm_solve, "the matrix-exponential")(*args, X, S)    # non-finite values: the caller checks
        return X, (S if want_sens else None)
    M = np.zeros((n + 1, n + 1))
    M[:n, :n] = A
    M[:n, n] = b
    X = _propagate(M, np.append(x0, 1.0), taus)[:, :n]
    if not want_sens:
        return X, None
    K = dA.shape[0]
    S = np.empty((len(taus), n, K))
    big = np.zeros((2 * n + 1, 2 * n + 1))
    big[:n, :n] = A
    big[n:2 * n, n:2 * n] = A
    big[:n, 2 * n] = b
    for k in range(K):
        big[n:2 * n, :n] = dA[k]
        big[n:2 * n, 2 * n] = db[k]
        S[:, :, k] = _propagate(big, np.concatenate([x0, s0[:, k], [1.0]]), taus)[:, n:2 * n]
    return X, S


#: Public name of :func:`_eigen` ((lam, V, Vinv) of A, or None when V is ill-conditioned).
eigen_decomposition = _eigen

#: Public name of :func:`_distinct_steps` ((steps, step_index) of output times, for the compiled
#: expm path; the batched one of :mod:`.linear_batch` uses it too).
distinct_steps = _distinct_steps


def affine_solution(A, b, x0):
    """The solution of x' = A x + b from x(0) = x0 as a callable ``taus (m,) -> X (m, n)`` (taus
    >= 0), for callers that evaluate one solution at many scattered times (root finding on it).
    With a well-conditioned eigendecomposition it is computed once and each call costs a few
    numpy operations, x(tau) = V (e^{lam tau} c + tau e[lam tau, 0] d) with c = V^-1 x0,
    d = V^-1 b; otherwise each call is :func:`solve_affine` (the matrix exponential)."""
    A = np.asarray(A, dtype=float)
    b = np.asarray(b, dtype=float)
    x0 = np.asarray(x0, dtype=float)
    eig = _eigen(A)
    if eig is None:
        def stepped(taus):
            taus = np.atleast_1d(np.asarray(taus, dtype=float))
            order = np.argsort(taus, kind="stable")     # the exponentials step from time to time
            X = np.empty((len(taus), len(x0)))
            X[order] = solve_affine(A, b, x0, taus[order], method="expm")[0]
            return X
        return stepped
    lam, V, Vinv = eig
    c, d = Vinv @ x0, Vinv @ b
    zero = lam == 0
    safe = np.where(zero, 1, lam)
    growth = lam.real.max() > 0

    def at(taus):
        taus = np.atleast_1d(np.asarray(taus, dtype=float))
        z = taus[:, None] * lam[None, :]
        if growth:
            e10 = dd1(z, np.zeros_like(z)) * taus[:, None]
        else:
            e10 = np.where(zero, taus[:, None], np.expm1(z) / safe)
        X = (np.exp(z) * c + e10 * d) @ V.T
        return X.real if np.iscomplexobj(X) else X
    return at
