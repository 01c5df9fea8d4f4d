"""numba kernel of the eigendecomposition path of :mod:`kinetics.numerics.linear` (optional: used when
numba is installed; the numpy implementation in ``linear`` is the reference and fallback).

One compiled call does what costs a dozen numpy calls (each a few µs at these sizes): build
the complex eigenvector matrix from LAPACK's real output, invert it, check its conditioning,
and evaluate states and sensitivities at every output time with the divided differences of
the exponential. Compiled once and cached on disk (``cache=True``).

The algorithm is written once, generic in the scalar type: numba compiles it for float64
(real spectra, most models: about twice as fast) and for complex128 (complex spectra).
"""

from __future__ import annotations

import math

import numpy as np
from .jit import jit, lapack_dgesv, lapack_int, numba_available, overload
from .jit import numba_types as types

if not numba_available():   # kinetics.numerics.linear then uses its numpy implementation
    raise ImportError("kinetics.numerics.linear_kernel needs numba")

_CLOSE = 1e-5

# The scalar helpers below take float or complex arguments: they use only operations numba has
# for both (np.exp, abs, .real, arithmetic; a float literal unifies to complex where the data
# is complex), except expm1, which is dispatched on the type at compile time.


def _expm1(h):
    """exp(h) - 1, accurate for small |h|, for a real or a complex scalar (numba only)."""
    raise NotImplementedError("compiled only: see the overload below")


@overload(_expm1, jit_options={"error_model": "numpy"})
def _expm1_typed(h):
    if not isinstance(h, types.Complex):
        return lambda h: math.expm1(h)

    def complex_expm1(h):
        if h.imag == 0.0:
            return complex(math.expm1(h.real), 0.0)
        x, y = h.real, h.imag
        s = math.sin(0.5 * y)
        return complex(math.expm1(x) * math.cos(y) - 2.0 * s * s, math.exp(x) * math.sin(y))
    return complex_expm1


@jit
def _phi1(h):
    """phi1(h) = (e^h - 1) / h = e[h, 0]."""
    if h == 0:
        return 1.0
    return _expm1(h) / h


@jit
def _dphi1(m):
    """phi1'(m), by its series near 0."""
    if abs(m) < 0.2:
        total, power, fact = 0.0, 1.0, 2.0
        for k in range(16):
            total += (k + 1) * power / fact
            power *= m
            fact *= k + 3
        return total
    return (np.exp(m) * (m - 1.0) + 1.0) / (m * m)


@jit
def _dd1(a, b):
    """e[a, b], pivoting on the point with the larger real part."""
    if b.real > a.real:
        a, b = b, a
    return np.exp(a) * _phi1(b - a)


@jit
def _dd2_zero(a, b):
    """e[a, b, 0], pivoting on the point with the largest real part (a, b are small here)."""
    if a.real >= b.real and a.real >= 0.0:
        pivot, x, y = a, b - a, -a
    elif b.real > a.real and b.real >= 0.0:
        pivot, x, y = b, a - b, -b
    else:
        pivot, x, y = a - a, a, b  # a - a: an exact zero of a's type
    h = x - y
    if abs(h) <= _CLOSE * (1.0 + max(abs(x), abs(y))):
        psi = _dphi1(0.5 * (x + y))
    else:
        psi = (_phi1(x) - _phi1(y)) / h
    return np.exp(pivot) * psi


@jit
def _invert(V, Vinv):
    """Gauss-Jordan with partial pivoting; False if singular."""
    n = V.shape[0]
    M = V.copy()
    for i in range(n):
        for j in range(n):
            Vinv[i, j] = 1.0 if i == j else 0.0
    for col in range(n):
        best, piv = -1.0, col
        for r in range(col, n):
            if abs(M[r, col]) > best:
                best, piv = abs(M[r, col]), r
        if best <= 1e-300:
            return False
        if piv != col:
            for j in range(n):
                M[col, j], M[piv, j] = M[piv, j], M[col, j]
                Vinv[col, j], Vinv[piv, j] = Vinv[piv, j], Vinv[col, j]
        inv = 1.0 / M[col, col]
        for j in range(n):
            M[col, j] *= inv
            Vinv[col, j] *= inv
        for r in range(n):
            if r != col:
                f = M[r, col]
                if f != 0:
                    for j in range(n):
                        M[r, j] -= f * M[col, j]
                        Vinv[r, j] -= f * Vinv[col, j]
    return True


@jit
def _eigen_core(lam, V, b, x0, taus, dA, db, s0, max_condition, X, S):
    """States X (m, n) and sensitivities S (m, n, K) of x' = A x + b from the eigenvalues
    ``lam`` and eigenvectors ``V`` of A, both float64 (real spectrum) or both complex128.
    Returns False (outputs untouched) when V is singular or worse conditioned than allowed."""
    n = lam.shape[0]
    m = taus.shape[0]
    K = dA.shape[0]
    dtype = V.dtype
    Vinv = np.empty((n, n), dtype)
    if not _invert(V, Vinv):
        return False
    norm_v, norm_inv = 0.0, 0.0
    for jj in range(n):
        cv, ci = 0.0, 0.0
        for i in range(n):
            cv += abs(V[i, jj])
            ci += abs(Vinv[i, jj])
        norm_v = max(norm_v, cv)
        norm_inv = max(norm_inv, ci)
    if not norm_v * norm_inv <= max_condition:
        return False
    c = np.zeros(n, dtype)
    d = np.zeros(n, dtype)
    for i in range(n):
        for jj in range(n):
            c[i] += Vinv[i, jj] * x0[jj]
            d[i] += Vinv[i, jj] * b[jj]
    # G_k = Vinv dA_k V (dA is sparse in practice: skip zeros), g_k = Vinv db_k, sigma0_k = Vinv s0_k
    G = np.zeros((K, n, n), dtype)
    g = np.zeros((K, n), dtype)
    sigma0 = np.zeros((K, n), dtype)
    tmp = np.zeros((n, n), dtype)
    for k in range(K):
        tmp[:, :] = 0.0
        for p in range(n):
            for q in range(n):
                v = dA[k, p, q]
                if v != 0.0:
                    for jj in range(n):
                        tmp[p, jj] += v * V[q, jj]
        for i in range(n):
            for p in range(n):
                w = Vinv[i, p]
                if w != 0:
                    for jj in range(n):
                        G[k, i, jj] += w * tmp[p, jj]
                    g[k, i] += w * db[k, p]
                    sigma0[k, i] += w * s0[p, k]
    y = np.empty(n, dtype)
    ez = np.empty(n, dtype)
    e10 = np.empty(n, dtype)   # e[z_i, 0]
    z = np.empty(n, dtype)
    W = np.empty((n, n), dtype)
    sig = np.empty(n, dtype)
    for ti in range(m):
        t = taus[ti]
        for i in range(n):
            z[i] = lam[i] * t
            ez[i] = np.exp(z[i])
            e10[i] = (ez[i] - 1.0) / z[i] if abs(z[i]) >= 0.5 else _phi1(z[i])
            y[i] = ez[i] * c[i] + t * e10[i] * d[i]
        for a in range(n):
            acc = 0.0
            for i in range(n):
                acc += V[a, i] * y[i]
            X[ti, a] = acc.real
        if K == 0:
            continue
        # divided differences e[z_i, z_j] and e[z_i, z_j, 0] by recurrence where the points are
        # well separated (no cancellation), by the stable formulas where they are close
        # (both are symmetric in i, j: each pair is evaluated once)
        for i in range(n):
            for jj in range(i, n):
                dz = z[i] - z[jj]
                e1 = (ez[i] - ez[jj]) / dz if abs(dz) >= 0.5 else _dd1(z[i], z[jj])
                if abs(z[i]) >= 0.5:
                    e2 = (e1 - e10[jj]) / z[i]
                elif abs(z[jj]) >= 0.5:
                    e2 = (e1 - e10[i]) / z[jj]
                else:
                    e2 = _dd2_zero(z[i], z[jj])
                W[i, jj] = t * e1 * c[jj] + t * t * e2 * d[jj]
                W[jj, i] = t * e1 * c[i] + t * t * e2 * d[i]
        for k in range(K):
            for i in range(n):
                acc = ez[i] * sigma0[k, i] + t * e10[i] * g[k, i]
                for jj in range(n):
                    acc += G[k, i, jj] * W[i, jj]
                sig[i] = acc
            for a in range(n):
                acc = 0.0
                for i in range(n):
                    acc += V[a, i] * sig[i]
                S[ti, a, k] = acc.real
    return True


@jit
def eigen_solve(wr, wi, vr, b, x0, taus, dA, db, s0, max_condition, X, S):
    """States X (m, n) and sensitivities S (m, n, K) of x' = A x + b, given LAPACK dgeev's real
    output (wr, wi, vr) of A, in complex arithmetic. Returns False (outputs untouched) when the
    eigenvector matrix is singular or worse conditioned than allowed."""
    n = wr.shape[0]
    V = np.empty((n, n), np.complex128)
    lam = np.empty(n, np.complex128)
    j = 0
    while j < n:
        if wi[j] > 0.0 and j + 1 < n:
            for i in range(n):
                V[i, j] = complex(vr[i, j], vr[i, j + 1])
                V[i, j + 1] = complex(vr[i, j], -vr[i, j + 1])
            lam[j] = complex(wr[j], wi[j])
            lam[j + 1] = complex(wr[j + 1], wi[j + 1])
            j += 2
        else:
            for i in range(n):
                V[i, j] = vr[i, j]
            lam[j] = wr[j]
            j += 1
    return _eigen_core(lam, V, b, x0, taus, dA, db, s0, max_condition, X, S)


# Real eigenvalues ``lam`` and eigenvectors ``V`` (feed-forward compartment graphs, most
# models): the core itself, compiled for float64.
eigen_solve_real = _eigen_core


# ---------------------------------------------------------------------------------------------
# The fitting inner loop: values and sensitivities at data rows in one call.

@jit
def _directions(D, dA_full, db_full, n):
    """dA (K, n, n) and db (K, n) along the K directions dA = sum_l dA_full[l] D[l, k]."""
    P, K = D.shape
    dA = np.zeros((K, n, n))
    db = np.zeros((K, n))
    for l in range(P):
        for k in range(K):
            w = D[l, k]
            if w != 0.0:
                for i in range(n):
                    db[k, i] += w * db_full[l, i]
                    for j in range(n):
                        dA[k, i, j] += w * dA_full[l, i, j]
    return dA, db


@jit
def _rows(X, S, x0, taus, D, s0, C, e, dC, de, series, t_index, f, J):
    """f and J at the data rows from the states X and sensitivities S (see affine_rows_real)."""
    n = x0.shape[0]
    K = D.shape[1]
    m = taus.shape[0]
    for ti in range(m):
        if taus[ti] == 0.0:
            # element loops, not slice assignment: a broadcast compiles shape checks and
            # their error messages (string formatting), seconds of compile time for nothing
            for a in range(n):
                X[ti, a] = x0[a]
                for k in range(K):
                    S[ti, a, k] = s0[a, k]
    n_dp = dC.shape[0]
    for r in range(t_index.shape[0]):
        ti = t_index[r]
        sr = series[r]
        acc = e[sr]
        for a in range(n):
            acc += C[sr, a] * X[ti, a]
        f[r] = acc
        if not math.isfinite(acc):
            return False
        for k in range(K):
            acc = 0.0
            for a in range(n):
                acc += C[sr, a] * S[ti, a, k]
            for l in range(n_dp):
                w = D[l, k]
                if w != 0.0:
                    dh = de[l, sr]
                    for a in range(n):
                        dh += dC[l, sr, a] * X[ti, a]
                    acc += w * dh
            J[r, k] = acc
            if not math.isfinite(acc):
                return False
    return True


# The real and the complex spectrum are two kernels, chosen in Python: one kernel holding both
# branches compiled both specializations of the eigen core on first use (about half of the
# compile time of an affine fit), although most models only ever take the real one.

@jit
def affine_rows_real(wr, vr, b, x0, taus, dA_full, db_full, D, s0, C, e, dC, de, series, t_index, max_condition,
                     f, J):
    """Values f (N,) and sensitivities J (N, K) at data rows r: series ``series[r]`` at time
    ``taus[t_index[r]]`` of x' = A x + b, given LAPACK's eigen output (wr, vr) of an A whose
    eigenvalues are all real. Series s is C[s] . x + e[s]; dC (P or 0, s, n), de (P or 0, s) are
    the parameter derivatives of C, e. The K sensitivity directions are dA = sum_l dA_full[l]
    D[l, k] (likewise db), from s0 (n, K). Rows at tau = 0 use x0, s0 exactly. Returns False
    when the eigenvector matrix is too ill-conditioned (the caller uses expm) or a value is not
    finite."""
    n = b.shape[0]
    dA, db = _directions(D, dA_full, db_full, n)
    X = np.empty((taus.shape[0], n))
    S = np.empty((taus.shape[0], n, D.shape[1]))
    if not eigen_solve_real(wr, vr, b, x0, taus, dA, db, s0, max_condition, X, S):
        return False
    return _rows(X, S, x0, taus, D, s0, C, e, dC, de, series, t_index, f, J)


@jit
def affine_rows_complex(wr, wi, vr, b, x0, taus, dA_full, db_full, D, s0, C, e, dC, de, series, t_index,
                        max_condition, f, J):
    """:func:`affine_rows_real` for an A with complex eigenvalues (LAPACK's wr, wi, vr)."""
    n = b.shape[0]
    dA, db = _directions(D, dA_full, db_full, n)
    X = np.empty((taus.shape[0], n))
    S = np.empty((taus.shape[0], n, D.shape[1]))
    if not eigen_solve(wr, wi, vr, b, x0, taus, dA, db, s0, max_condition, X, S):
        return False
    return _rows(X, S, x0, taus, D, s0, C, e, dC, de, series, t_index, f, J)


# ---------------------------------------------------------------------------------------------
# The matrix-exponential path (defective or ill-conditioned A): scaling and squaring with Padé
# approximants, the algorithm of scipy.linalg.expm (Al-Mohy & Higham, "A new scaling and
# squaring algorithm for the matrix exponential", SIAM J. Matrix Anal. Appl. 31, 970 (2009)),
# with the 1-norms of the matrix powers computed exactly (the matrices here are small). The
# Python cost of scipy's expm (about 50 µs a call) was most of an evaluation of a model on this
# path, which takes one exponential per distinct output step and sensitivity direction.

_PADE = {
    3: (120.0, 60.0, 12.0, 1.0),
    5: (30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0),
    7: (17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0),
    9: (17643225600.0, 8821612800.0, 2075673600.0, 302702400.0, 30270240.0, 2162160.0, 110880.0, 3960.0,
        90.0, 1.0),
    13: (64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0, 129060195264000.0,
         10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0),
}
# arrays, not tuples: numba unifies arrays of any length in one variable (tuples of different lengths not)
_B3, _B5, _B7, _B9, _B13 = (np.array(_PADE[m]) for m in (3, 5, 7, 9, 13))
# largest ||A|| (in the eta sense of the paper) at which Padé degree m is accurate to double precision
_THETA3, _THETA5, _THETA7, _THETA9, _THETA13 = (1.495585217958292e-2, 2.539398330063230e-1, 9.504178996162932e-1,
                                                2.097847961257068, 4.25)
# 1 / |c_{2m+1}|, the leading coefficient of the Padé error series, for the ell() correction
_C3, _C5, _C7, _C9, _C13 = (float(math.comb(2 * (2 * m + 1), 2 * m + 1) * math.factorial(2 * (2 * m + 1) + 1))
                            for m in (3, 5, 7, 9, 13))


# Compile time: the kernels of this path call each other as little as possible, because numba
# links the machine code of every callee into its caller and optimizes and generates the whole
# again: one entry (expm_solve) with one call of expm, the Padé degree a runtime value (the
# degree as a constant argument compiled one specialization per degree, five in all), and
# element loops instead of numpy array expressions (their shape checks format error messages:
# seconds of compile time each). The loops evaluate the same expressions in the same order as
# the array expressions did, so the results are unchanged to the bit. A first version (levels
# expm -> propagate -> expm_solve -> affine_rows_expm, five Padé specializations) took 50-70 s.


@jit
def _onenorm(A):
    """Largest absolute column sum."""
    n = A.shape[0]
    best = 0.0
    for j in range(n):
        s = 0.0
        for i in range(n):
            s += abs(A[i, j])
        if s > best:
            best = s
    return best


@jit
def _ell(A, scale, m, c_recip):
    """The extra squarings the backward-error bound of degree m asks for (scipy's _ell) for the
    matrix ``scale * A``: from ||abs(scale A)^(2m+1)||_1, computed exactly as the largest entry
    of 1^T abs(scale A)^(2m+1)."""
    n = A.shape[0]
    As = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            As[i, j] = A[i, j] * scale
    p = 2 * m + 1
    v = np.ones(n)
    w = np.empty(n)
    for _ in range(p):
        for j in range(n):
            s = 0.0
            for i in range(n):
                s += v[i] * abs(As[i, j])
            w[j] = s
        for j in range(n):
            v[j] = w[j]
    norm = 0.0
    for j in range(n):
        if v[j] > norm:
            norm = v[j]
    if norm == 0.0:
        return 0
    alpha = norm / (_onenorm(As) * c_recip)
    if not alpha > 0.0:
        return 0
    value = math.ceil(math.log2(alpha / 2.0 ** -53) / (2 * m))
    return max(int(value), 0)


@jit
def _sum3(out, p, P, q, Q, r, R):
    """out = p P + q Q + r R, element by element (in this order)."""
    n = P.shape[0]
    for i in range(n):
        for j in range(n):
            out[i, j] = p * P[i, j] + q * Q[i, j] + r * R[i, j]


@jit
def _pade_solve(A, A2, A4, A6, m):
    """r_m(A) = (V - U)^-1 (V + U) of Padé degree m (powers of A given)."""
    n = A.shape[0]
    eye = np.eye(n)
    T = np.empty((n, n))
    if m == 13:
        b = _B13
        W = np.empty((n, n))
        _sum3(W, b[13], A6, b[11], A4, b[9], A2)
        P = A6 @ W
        for i in range(n):
            for j in range(n):
                T[i, j] = P[i, j] + b[7] * A6[i, j] + b[5] * A4[i, j] + b[3] * A2[i, j] + b[1] * eye[i, j]
        U = A @ T
        _sum3(W, b[12], A6, b[10], A4, b[8], A2)
        V = A6 @ W
        for i in range(n):
            for j in range(n):
                V[i, j] = V[i, j] + b[6] * A6[i, j] + b[4] * A4[i, j] + b[2] * A2[i, j] + b[0] * eye[i, j]
    else:
        if m == 3:
            b = _B3
        elif m == 5:
            b = _B5
        elif m == 7:
            b = _B7
        else:
            b = _B9
        # U = A sum_{j odd} b_j A^{j-1}, V = sum_{j even} b_j A^j
        V = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                T[i, j] = b[1] * eye[i, j] + b[3] * A2[i, j]
                V[i, j] = b[0] * eye[i, j] + b[2] * A2[i, j]
        P = A2
        for k in range(4, m + 1, 2):
            P = P @ A2
            for i in range(n):
                for j in range(n):
                    V[i, j] = V[i, j] + b[k] * P[i, j]
            if k + 1 <= m:
                for i in range(n):
                    for j in range(n):
                        T[i, j] = T[i, j] + b[k + 1] * P[i, j]
        U = A @ T
    return _solve_square(V, U)


_gesv = lapack_dgesv()
_LAPACK_INT = lapack_int()
_KIND_D = ord("d")


@jit
def _solve_square(V, U):
    """(V - U)^-1 (V + U), C-contiguous, as ``np.linalg.solve(V - U, V + U)`` computes it in
    numba: the same LAPACK dgesv on the same Fortran-ordered copies (so the same numbers), and
    its LinAlgError for non-finite or singular input."""
    n = V.shape[0]
    a = np.empty((n, n))    # V - U in Fortran order
    bt = np.empty((n, n))   # V + U in Fortran order
    for i in range(n):
        for j in range(n):
            a[j, i] = V[i, j] - U[i, j]
    for i in range(n):
        for j in range(n):
            if not math.isfinite(a[j, i]):
                raise np.linalg.LinAlgError("Array must not contain infs or NaNs.")
    for i in range(n):
        for j in range(n):
            bt[j, i] = V[i, j] + U[i, j]
    for i in range(n):
        for j in range(n):
            if not math.isfinite(bt[j, i]):
                raise np.linalg.LinAlgError("Array must not contain infs or NaNs.")
    ipiv = np.empty(n, dtype=_LAPACK_INT)
    info = _gesv(_KIND_D, n, n, a.ctypes, n, ipiv.ctypes, bt.ctypes, n)
    if info > 0:
        raise np.linalg.LinAlgError("Matrix is singular to machine precision.")
    R = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            R[i, j] = bt[j, i]
    return R


@jit
def _scale(A, f):
    """A * f, a new array."""
    n = A.shape[0]
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = A[i, j] * f
    return out


@jit
def expm(A):
    """exp(A) of a square float64 matrix (see the comment above: scipy's algorithm, compiled)."""
    A2 = A @ A
    A4 = A2 @ A2
    A6 = A4 @ A2
    d4 = _onenorm(A4) ** 0.25
    d6 = _onenorm(A6) ** (1.0 / 6.0)
    eta1 = max(d4, d6)
    s = 0
    # (np.int64: a plain constant would compile _ell and _pade_solve once per degree)
    if eta1 <= _THETA3 and _ell(A, 1.0, np.int64(3), _C3) == 0:
        m = np.int64(3)
    elif eta1 <= _THETA5 and _ell(A, 1.0, np.int64(5), _C5) == 0:
        m = np.int64(5)
    else:
        A8 = A4 @ A4
        d8 = _onenorm(A8) ** 0.125
        eta3 = max(d6, d8)
        if eta3 <= _THETA7 and _ell(A, 1.0, np.int64(7), _C7) == 0:
            m = np.int64(7)
        elif eta3 <= _THETA9 and _ell(A, 1.0, np.int64(9), _C9) == 0:
            m = np.int64(9)
        else:
            m = np.int64(13)
            A10 = A4 @ A6
            d10 = _onenorm(A10) ** 0.1
            eta5 = min(eta3, max(d8, d10))
            if eta5 > 0.0:
                s = max(int(math.ceil(math.log2(eta5 / _THETA13))), 0)
            s += _ell(A, 2.0 ** -s, m, _C13)
            if s:
                f = 2.0 ** -s
                A = _scale(A, f)
                A2 = _scale(A2, f * f)
                A4 = _scale(A4, (f * f) ** 2)
                A6 = _scale(A6, (f * f) ** 3)
    R = _pade_solve(A, A2, A4, A6, m)
    for _ in range(s):
        R = R @ R
    return R


@jit
def expm_solve(A, b, x0, steps, step_index, dA, db, s0, X, S):
    """States X (m, n) and sensitivities S (m, n, K) of x' = A x + b at the output times whose
    steps from the previous time (from 0 for the first) are ``steps[step_index]`` (-1: no
    step): the exponential of [[A, b], [0, 0]] and, per direction k, of the block matrix
    [[A, 0, b], [dA_k, A, db_k], [0, 0, 0]] (whose middle block row carries s' = A s + dA x + db).
    The states come from their own exponential, so they do not depend on the directions asked.
    Returns False if a value is not finite. One exponential per distinct step length and system."""
    n = b.shape[0]
    m = step_index.shape[0]
    K = dA.shape[0]
    n_steps = steps.shape[0]
    # system -1: the states, [[A, b], [0, 0]] (size n + 1); system k >= 0: direction k (2 n + 1)
    for system in range(-1, K):
        size = n + 1 if system < 0 else 2 * n + 1
        M = np.zeros((size, size))
        z = np.zeros(size)
        for i in range(n):
            for j in range(n):
                M[i, j] = A[i, j]
            M[i, size - 1] = b[i]
            z[i] = x0[i]
        z[size - 1] = 1.0
        if system >= 0:
            for i in range(n):
                for j in range(n):
                    M[n + i, n + j] = A[i, j]
                    M[n + i, j] = dA[system, i, j]
                M[n + i, size - 1] = db[system, i]
                z[n + i] = s0[i, system]
        E = np.empty((n_steps, size, size))
        Mh = np.empty((size, size))
        for u in range(n_steps):
            for i in range(size):
                for j in range(size):
                    Mh[i, j] = M[i, j] * steps[u]
            R = expm(Mh)
            for i in range(size):
                for j in range(size):
                    E[u, i, j] = R[i, j]
        offset = 0 if system < 0 else n
        for t in range(m):
            u = step_index[t]
            if u >= 0:
                z = E[u] @ z
            for i in range(n):
                v = z[offset + i]
                if system < 0:
                    X[t, i] = v
                else:
                    S[t, i, system] = v
                if not math.isfinite(v):
                    return False
    return True


def affine_rows_expm(A, b, x0, taus, steps, step_index, dA_full, db_full, D, s0, C, e, dC, de, series, t_index,
                     f, J):
    """:func:`affine_rows_real` by the matrix exponential (any A): the fitting inner loop of
    models whose eigenvectors are too ill-conditioned for the eigen path. Three compiled calls
    from Python (the helpers are the eigen path's, compiled with it): a kernel calling
    :func:`expm_solve` would compile all of it a second time."""
    n = b.shape[0]
    dA, db = _directions(D, dA_full, db_full, n)
    X = np.empty((taus.shape[0], n))
    S = np.empty((taus.shape[0], n, D.shape[1]))
    if not expm_solve(A, b, x0, steps, step_index, dA, db, s0, X, S):
        return False
    return _rows(X, S, x0, taus, D, s0, C, e, dC, de, series, t_index, f, J)
