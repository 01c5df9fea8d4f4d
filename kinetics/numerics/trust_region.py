"""Bounded nonlinear least squares: scipy's trust-region-reflective (TRF) algorithm, compiled.

Why this exists
    The multi-start fit runs ~20 local fits of ~40-60 iterations each. ``scipy.optimize.
    least_squares(method="trf")`` converges in few iterations on our problems, but each of its
    iterations spends ~350 µs in small numpy calls (SVD wrapper, trust-region solve, norms,
    Coleman-Li scaling), several times the cost of one model evaluation. This module is the
    same algorithm with the same iterates, its numerical work done by numba kernels: on the
    40x6 fit task ~28 µs per evaluation instead of ~300-500 µs, of which ~20 µs is LAPACK's SVD
    itself (one per accepted step, as in scipy).

What is ported
    ``scipy/optimize/_lsq/trf.py`` (``trf_bounds``, ``select_step``; ``trf_no_bounds`` when no
    bound is finite, as scipy dispatches) with ``tr_solver="exact"`` and ``loss="linear"``,
    the helpers of ``scipy/optimize/_lsq/common.py`` it calls, and the argument handling and
    termination messages of ``least_squares``. Every floating-point operation is done in
    scipy's order with the primitives numpy uses (BLAS ``ddot``/``dgemv``, LAPACK ``gesdd``,
    numpy's pairwise summation, libm ``pow`` for scalar powers), so that the trial points are
    scipy's bit for bit, not merely close (``tests/test_trust_region.py`` compares them; a
    1-ulp difference would otherwise grow into a different nfev on ill-conditioned fits).

Design
    The residuals stay in Python (a general model simulation). The driver
    :func:`least_squares_trf` is a reverse-communication loop: one compiled call advances the
    algorithm from the last evaluation to the next trial point (assessing the trial, updating
    the radius, accepting the point, scaling, the SVD and the reflective step selection), so
    each model evaluation costs exactly one compiled call. The model returns residuals and
    Jacobian together, so an accepted trial point's Jacobian is used without a second call.
    The kernels release the GIL (threads over multi-start fits run in parallel) and are cached
    on disk by numba (``cache=True``); :func:`kinetics.warm_up` loads them (compiling them once per
    machine takes ~40 s on 2 cores).

Differences from ``scipy.optimize.least_squares``
    * ``x0`` outside the bounds is clipped into them (scipy raises); then, as scipy does,
      moved at least a relative 1e-10 inside (``make_strictly_feasible``).
    * ``kinetics.errors.SolverError`` raised by the model at a trial point is a failed step,
      exactly like a non-finite residual in scipy (the radius shrinks to a quarter of the
      step); at the initial point it propagates.
    * No robust losses, no ``lsmr`` solver, no callback, no verbosity.
    * The Jacobian is used in C order (as the models return it); scipy given a Fortran-ordered
      Jacobian rounds two of its sums differently (same algorithm, iterates equal to ~1e-15).

Without numba, :func:`least_squares_trf` calls ``scipy.optimize.least_squares`` instead (same
results, scipy's speed).

Port of SciPy code, BSD-3-Clause license:
Copyright (c) 2001-2002 Enthought, Inc. 2003, SciPy Developers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import SolverError
from .compile_notice import use_compiled

from .jit import jit as _jit
from .jit import lapack_dgesdd, numba_available


def _inlined(fn):
    """A kernel inlined into its caller by numba (IR level) instead of compiled on its own.

    For the glue of the iteration (start, advance, the loop's top and its trial step): numba
    compiles every kernel into a module of its own, links the modules of everything it calls
    into it and generates machine code for the linked whole, so each level of calls generates
    the code of all levels below it again. Inlining the glue levels into the one entry kernel
    :func:`_step` cut the group's compile time from ~22 to ~14 CPU seconds (2 cores, loaded);
    inlining everything instead is far slower (numba retypes each inlined body)."""
    return _jit(fn, inline="always")

__all__ = ["least_squares_trf", "TRFResult", "TERMINATION_MESSAGES", "numba_available"]

EPS = np.finfo(float).eps

#: ``least_squares``'s messages for the statuses TRF can return.
TERMINATION_MESSAGES = {
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
    -3: "stopped by the caller's rule (stop) before convergence.",
}
_STOPPED = -3


# Copies element by element: an array assigned to a slice (dst[:] = src) compiles numba's
# broadcast shape checks with formatted error messages, seconds of compile time each.
@_jit
def _copy(dst, src):
    """dst[:len(src)] = src for 1-D arrays."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@_jit
def _copy2(dst, src):
    """dst[:rows, :cols] = src for 2-D arrays."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


# Elementwise helpers instead of numpy array expressions: each array expression compiles a
# broadcasting loop nest with its shape checks into every kernel that uses it. The same
# operation per element, so the same values.
@_jit
def _times(a, b):
    """a * b for 1-D arrays of one length."""
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        out[i] = a[i] * b[i]
    return out


@_jit
def _plus(a, b):
    """a + b for 1-D arrays of one length."""
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        out[i] = a[i] + b[i]
    return out


@_jit
def _scale(a, c):
    """a *= c in place."""
    for i in range(a.shape[0]):
        a[i] *= c


@_jit
def _negated(a):
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        out[i] = -a[i]
    return out


@dataclass
class TRFResult:
    """Outcome of :func:`least_squares_trf`; fields as in scipy's ``least_squares`` result."""

    x: np.ndarray
    cost: float           # 0.5 * sum(fun**2)
    fun: np.ndarray       # residuals at x
    jac: np.ndarray       # Jacobian at x
    grad: np.ndarray      # jac.T @ fun
    optimality: float     # inf-norm of the Coleman-Li scaled gradient
    active_mask: np.ndarray  # -1 / 1 on an active lower / upper bound, else 0
    nfev: int             # calls of fun_and_jac
    njev: int             # Jacobians used (initial point and accepted steps)
    status: int           # key of TERMINATION_MESSAGES
    message: str
    success: bool


# ============================================================================ numba kernels
# Elementary operations, chosen to round exactly as numpy does.

_gesdd = lapack_dgesdd() if numba_available() else None
_KIND_D, _JOBZ_S = ord("d"), ord("S")


@_jit
def _svd(a):
    """(s, U.T, VT.T) of ``np.linalg.svd(a, full_matrices=False)`` as numba computes it (the
    same LAPACK call on the same Fortran-ordered copy, so the same numbers), U.T (k, m) and
    VT.T (n, k) C-contiguous; LinAlgError as numpy for non-finite input or no convergence."""
    m, n = a.shape
    k = min(m, n)
    acpy = np.empty((n, m))                 # a in Fortran order
    for i in range(m):
        for j in range(n):
            v = a[i, j]
            if not math.isfinite(v):
                raise np.linalg.LinAlgError("Array must not contain infs or NaNs.")
            acpy[j, i] = v
    s = np.empty(k)
    ut = np.empty((k, m))                   # U in Fortran order is U.T in C order
    v = np.empty((n, k))                    # VT in Fortran order is VT.T = V in C order
    info = _gesdd(_KIND_D, _JOBZ_S, m, n, acpy.ctypes, m, s.ctypes, ut.ctypes, m, v.ctypes, k)
    if info != 0:
        raise np.linalg.LinAlgError("SVD did not converge.")
    return s, ut, v


@_jit
def _norm(a):
    """numpy's 2-norm of a vector: sqrt(dot(a, a)) (not BLAS nrm2)."""
    return math.sqrt(np.dot(a, a))


@_jit
def _matvec(A, x):
    """np.dot(matrix, vector). numpy computes a one-row matrix times a vector with BLAS ddot,
    numba with gemv, whose rounding differs; otherwise both call gemv alike."""
    if A.shape[0] == 1 and A.shape[1] > 1:
        out = np.empty(1)
        out[0] = np.dot(np.ascontiguousarray(A[0]), x)
        return out
    return np.dot(A, x)


@_jit
def _block_sum(a, start, count):
    """numpy's summation of up to 128 contiguous floats (8 accumulators beyond 8 elements)."""
    if count < 8:
        total = 0.0
        for i in range(start, start + count):
            total += a[i]
        return total
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    while i < count - count % 8:
        j = start + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < count:
        total += a[start + i]
        i += 1
    return total


@_jit
def _left_half(count):
    half = count // 2
    return half - half % 8


@_jit
def _pairwise_sum(a):
    """np.sum of a contiguous float vector: blocks of 128 summed pairwise, sum(left half) +
    sum(right half). numpy recurses; here the recursion runs on an explicit stack, because
    numba's disk cache crashes on recursive functions."""
    if a.size <= 128:
        return _block_sum(a, np.int64(0), a.size)   # not a literal 0: one specialization
    starts = np.empty(64, dtype=np.int64)
    counts = np.empty(64, dtype=np.int64)
    left_sums = np.empty(64)
    left_done = np.zeros(64, dtype=np.bool_)
    top = 0
    starts[0], counts[0], left_done[0] = 0, a.size, False
    while True:
        if counts[top] > 128:  # descend into the left half
            top += 1
            starts[top], counts[top], left_done[top] = starts[top - 1], _left_half(counts[top - 1]), False
            continue
        value = _block_sum(a, starts[top], counts[top])
        top -= 1
        while top >= 0 and left_done[top]:  # both halves known: add them, go up
            value = left_sums[top] + value
            top -= 1
        if top < 0:
            return value
        left_sums[top], left_done[top] = value, True  # left half known: do the right half
        half = _left_half(counts[top])
        top += 1
        starts[top], counts[top], left_done[top] = starts[top - 1] + half, counts[top - 1] - half, False


@_jit
def _builtin_max(a, b):
    """Python's max(a, b) of two floats (the first unless the second is larger; matters for nan)."""
    return b if b > a else a


@_jit
def _builtin_min(a, b):
    return b if b < a else a


@_jit
def _np_maximum(a, b):
    """np.maximum(a, b) of two floats: nan propagates."""
    if np.isnan(a) or np.isnan(b):
        return np.nan
    return a if a >= b else b


# ---------------------------------------------------------------------- trust-region subproblem

# numpy evaluates a scalar ``a ** 0.5`` or ``a ** 2`` with libm pow, which rounds differently
# from sqrt(a) or a * a in about 0.1 % of cases; LLVM turns a power with a constant exponent
# into those. So the exponents 0.5 and 2 of scipy's scalar powers reach the kernels at run time
# (``real[_HALF]``, ``real[_TWO]``, passed on as ``half`` and ``two``).


@_jit
def intersect_trust_region(x, s, Delta, two):
    """Roots t_neg <= t_pos of ||x + s t|| = Delta (``two`` = 2.0, see above)."""
    a = np.dot(s, s)
    if a == 0:
        raise ValueError("`s` is zero.")
    b = np.dot(x, s)
    c = np.dot(x, x) - Delta**two
    if c > 0:
        raise ValueError("`x` is not within the trust region.")
    d = math.sqrt(b * b - a * c)  # root of a quarter of the discriminant
    q = -(b + math.copysign(d, b))  # avoids cancellation (Numerical Recipes)
    t1 = q / a
    t2 = c / q
    if t1 < t2:
        return t1, t2
    return t2, t1


@_jit
def phi_and_derivative(alpha, suf, s, Delta):
    """||p(alpha)|| - Delta and its derivative, p(alpha) the alpha-regularized LSQ solution."""
    k = s.shape[0]
    q = np.empty(k)
    terms = np.empty(k)
    for i in range(k):
        denom = s[i] * s[i] + alpha
        q[i] = suf[i] / denom
        terms[i] = (suf[i] * suf[i]) / denom**3.0  # libm pow, as numpy's ``denom**3``
    p_norm = _norm(q)
    phi = p_norm - Delta
    phi_prime = -_pairwise_sum(terms) / p_norm
    return phi, phi_prime


@_jit
def _alpha_guess(alpha_lower, alpha_upper, half):
    return _builtin_max(0.001 * alpha_upper, (alpha_lower * alpha_upper) ** half)


@_jit
def solve_lsq_trust_region(n, m, uf, s, V, Delta, initial_alpha, half):
    """min ||J p + f|| subject to ||p|| <= Delta from the SVD of J (More's method, MINPACK).

    ``uf = U.T f``, ``s`` singular values, ``V = VT.T``, ``half`` = 0.5 (see above). Returns
    (p, alpha) with alpha the Levenberg-Marquardt parameter (0 for the Gauss-Newton step)."""
    rtol = 0.01
    max_iter = 10
    suf = _times(s, uf)

    if m >= n:  # Gauss-Newton step if J has full rank and the step fits
        threshold = EPS * m * s[0]
        full_rank = s[-1] > threshold
    else:
        full_rank = False
    if full_rank:
        q = np.empty(s.shape[0])
        for i in range(s.shape[0]):
            q[i] = uf[i] / s[i]
        p = _negated(_matvec(V, q))
        if _norm(p) <= Delta:
            return p, 0.0

    alpha_upper = _norm(suf) / Delta
    if full_rank:
        phi, phi_prime = phi_and_derivative(0.0, suf, s, Delta)
        alpha_lower = -phi / phi_prime
    else:
        alpha_lower = 0.0

    if not full_rank and initial_alpha == 0:
        alpha = _alpha_guess(alpha_lower, alpha_upper, half)
    else:
        alpha = initial_alpha

    for _ in range(max_iter):
        if alpha < alpha_lower or alpha > alpha_upper:
            alpha = _alpha_guess(alpha_lower, alpha_upper, half)
        phi, phi_prime = phi_and_derivative(alpha, suf, s, Delta)
        if phi < 0:
            alpha_upper = alpha
        ratio = phi / phi_prime
        alpha_lower = _builtin_max(alpha_lower, alpha - ratio)
        alpha -= (phi + Delta) * ratio / Delta
        if abs(phi) < rtol * Delta:
            break

    q = np.empty(s.shape[0])
    for i in range(s.shape[0]):
        q[i] = suf[i] / (s[i] * s[i] + alpha)
    p = _negated(_matvec(V, q))
    # Make ||p|| exactly Delta, so that p does not lie outside the trust region.
    _scale(p, Delta / _norm(p))
    return p, alpha


@_jit
def update_tr_radius(Delta, actual_reduction, predicted_reduction, step_norm, bound_hit):
    """New radius from the ratio of actual to predicted reduction; returns (Delta, ratio)."""
    if predicted_reduction > 0:
        ratio = actual_reduction / predicted_reduction
    elif predicted_reduction == actual_reduction == 0:
        ratio = 1.0
    else:
        ratio = 0.0
    if ratio < 0.25:
        Delta = 0.25 * step_norm
    elif ratio > 0.75 and bound_hit:
        Delta *= 2.0
    return Delta, ratio


@_jit
def check_termination(dF, F, dx_norm, x_norm, ratio, ftol, xtol):
    """Status 2 (ftol), 3 (xtol), 4 (both) or -1 (continue; scipy's None)."""
    ftol_satisfied = dF < ftol * F and ratio > 0.25
    xtol_satisfied = dx_norm < xtol * (xtol + x_norm)
    if ftol_satisfied and xtol_satisfied:
        return 4
    if ftol_satisfied:
        return 2
    if xtol_satisfied:
        return 3
    return -1


# ---------------------------------------------------------------------- 1-D quadratics

@_jit
def build_quadratic_1d(J, g, s, diag, s0):
    """a, b, c of f(t) = 0.5 (s0 + s t)^T (J^T J + diag) (s0 + s t) + g^T (s0 + s t).

    ``s0`` empty means 0 (then c = 0; an empty array rather than None: one specialization)."""
    v = _matvec(J, s)
    a = np.dot(v, v)
    a += np.dot(_times(s, diag), s)
    a *= 0.5
    b = np.dot(g, s)
    c = 0.0
    if s0.size > 0:
        u = _matvec(J, s0)
        b += np.dot(u, v)
        c = 0.5 * np.dot(u, u) + np.dot(g, s0)
        s0_diag = _times(s0, diag)
        b += np.dot(s0_diag, s)
        c += 0.5 * np.dot(s0_diag, s0)
    return a, b, c


@_jit
def minimize_quadratic_1d(a, b, lb, ub, c):
    """Minimum (t, y) of y = a t^2 + b t + c on [lb, ub] (first of lb, ub, vertex on ties)."""
    ts = np.empty(3)
    ts[0] = lb
    ts[1] = ub
    count = 2
    if a != 0:
        extremum = -0.5 * b / a
        if lb < extremum < ub:
            ts[2] = extremum
            count = 3
    best_t = ts[0]
    best_y = ts[0] * (a * ts[0] + b) + c
    for i in range(1, count):  # np.argmin: first minimum, a nan wins
        y = ts[i] * (a * ts[i] + b) + c
        if not np.isnan(best_y) and (np.isnan(y) or y < best_y):
            best_t, best_y = ts[i], y
    return best_t, best_y


@_jit
def evaluate_quadratic(J, g, s, diag):
    """0.5 s^T (J^T J + diag) s + g^T s."""
    Js = _matvec(J, s)
    q = np.dot(Js, Js)
    q += np.dot(_times(s, diag), s)
    return 0.5 * q + np.dot(s, g)


# ---------------------------------------------------------------------- bounds

@_jit
def in_bounds(x, lb, ub):
    for i in range(x.size):
        if not (x[i] >= lb[i] and x[i] <= ub[i]):
            return False
    return True


@_jit
def step_size_to_bound(x, s, lb, ub):
    """Smallest t >= 0 with x + s t on a bound, and which components hit (-1 lower, 1 upper)."""
    n = x.size
    steps = np.empty(n)
    for i in range(n):
        steps[i] = np.inf
        if s[i] != 0:
            steps[i] = _np_maximum((lb[i] - x[i]) / s[i], (ub[i] - x[i]) / s[i])
    min_step = steps[0]                  # np.min: the smallest, nan if any is nan
    for i in range(1, n):
        if min_step != min_step:
            break
        if steps[i] < min_step or steps[i] != steps[i]:
            min_step = steps[i]
    hits = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if steps[i] == min_step:
            hits[i] = 1 if s[i] > 0 else (-1 if s[i] < 0 else 0)   # np.sign
    return min_step, hits


def find_active_constraints(x, lb, ub, rtol):
    """-1 / 1 where x is within rtol * max(1, |bound|) of the lower / upper bound, else 0
    (scipy's, in numpy: it runs in Python, once per fit)."""
    active = np.zeros(x.shape, dtype=np.int64)
    if rtol == 0:
        active[x <= lb] = -1
        active[x >= ub] = 1
        return active
    lower_dist = x - lb
    upper_dist = ub - x
    lower_threshold = rtol * np.maximum(1, np.abs(lb))
    upper_threshold = rtol * np.maximum(1, np.abs(ub))
    active[np.isfinite(lb) & (lower_dist <= np.minimum(upper_dist, lower_threshold))] = -1
    active[np.isfinite(ub) & (upper_dist <= np.minimum(lower_dist, upper_threshold))] = 1
    return active


def make_strictly_feasible(x, lb, ub, rstep):
    """x moved at least a relative ``rstep`` > 0 inside the bounds (scipy's, in numpy: it runs
    in Python, once per fit; the kernels' rstep = 0 case is :func:`_trial_point`)."""
    x_new = x.copy()
    active = find_active_constraints(x, lb, ub, rstep)
    lower, upper = active == -1, active == 1
    x_new[lower] = lb[lower] + rstep * np.maximum(1, np.abs(lb[lower]))
    x_new[upper] = ub[upper] - rstep * np.maximum(1, np.abs(ub[upper]))
    tight = (x_new < lb) | (x_new > ub)          # bounds tighter than the shift
    x_new[tight] = 0.5 * (lb[tight] + ub[tight])
    return x_new


@_jit
def _trial_point(x, step, lb, ub, out):
    """out = x + step moved strictly inside the bounds: scipy's make_strictly_feasible(x +
    step, lb, ub, rstep=0), i.e. a point on or beyond a bound goes to the next float inside."""
    for i in range(x.size):
        xi = x[i] + step[i]
        if xi >= ub[i]:
            xi = np.nextafter(ub[i], lb[i])
        elif xi <= lb[i]:
            xi = np.nextafter(lb[i], ub[i])
        if xi < lb[i] or xi > ub[i]:             # bounds closer than one float
            xi = 0.5 * (lb[i] + ub[i])
        out[i] = xi


@_jit
def CL_scaling_vector(x, g, lb, ub, v, dv):
    """Coleman-Li scaling into v (distance to the bound the anti-gradient points at, else 1)
    and its derivative dv (-1, 0, 1)."""
    for i in range(x.size):
        v[i] = 1.0
        dv[i] = 0.0
        if g[i] < 0 and np.isfinite(ub[i]):
            v[i] = ub[i] - x[i]
            dv[i] = -1.0
        if g[i] > 0 and np.isfinite(lb[i]):
            v[i] = x[i] - lb[i]
            dv[i] = 1.0


@_jit
def select_step(x, J_h, diag_h, g_h, p, p_h, d, Delta, lb, ub, theta, two):
    """Best of the trust-region step (shortened to stay strictly feasible), its reflection at
    the first bound hit, and the Cauchy step. Returns (step, step_h, predicted reduction)."""
    if in_bounds(_plus(x, p), lb, ub):
        p_value = evaluate_quadratic(J_h, g_h, p_h, diag_h)
        return p, p_h, -p_value

    p_stride, hits = step_size_to_bound(x, p, lb, ub)

    # Reflected direction.
    r_h = p_h.copy()
    for i in range(r_h.size):
        if hits[i] != 0:
            r_h[i] *= -1
    r = _times(d, r_h)

    # Restrict the trust-region step so that it reaches the bound.
    _scale(p, p_stride)
    _scale(p_h, p_stride)
    x_on_bound = _plus(x, p)

    # The reflected direction leaves either the feasible region or the trust region first.
    _, to_tr = intersect_trust_region(p_h, r_h, Delta, two)
    to_bound, _ = step_size_to_bound(x_on_bound, r, lb, ub)

    # Step-size range along the reflected direction, keeping strict feasibility.
    r_stride = _builtin_min(to_bound, to_tr)
    if r_stride > 0:
        r_stride_l = (1 - theta) * p_stride / r_stride
        if r_stride == to_bound:
            r_stride_u = theta * to_bound
        else:
            r_stride_u = to_tr
    else:
        r_stride_l = 0.0
        r_stride_u = -1.0

    if r_stride_l <= r_stride_u:  # reflected step available
        a, b, c = build_quadratic_1d(J_h, g_h, r_h, diag_h, p_h)
        r_stride, r_value = minimize_quadratic_1d(a, b, r_stride_l, r_stride_u, c)
        _scale(r_h, r_stride)
        for i in range(r_h.shape[0]):
            r_h[i] += p_h[i]
        r = _times(r_h, d)
    else:
        r_value = np.inf

    # Step back from the bound to stay strictly interior.
    _scale(p, theta)
    _scale(p_h, theta)
    p_value = evaluate_quadratic(J_h, g_h, p_h, diag_h)

    ag_h = _negated(g_h)
    ag = _times(d, ag_h)
    to_tr = Delta / _norm(ag_h)
    to_bound, _ = step_size_to_bound(x, ag, lb, ub)
    if to_bound < to_tr:
        ag_stride = theta * to_bound
    else:
        ag_stride = to_tr
    a, b, _ = build_quadratic_1d(J_h, g_h, ag_h, diag_h, ag_h[:0])
    ag_stride, ag_value = minimize_quadratic_1d(a, b, 0.0, ag_stride, 0.0)
    _scale(ag_h, ag_stride)
    _scale(ag, ag_stride)

    if p_value < r_value and p_value < ag_value:
        return p, p_h, -p_value
    elif r_value < p_value and r_value < ag_value:
        return r, r_h, -r_value
    return ag, ag_h, -ag_value


@_jit
def compute_jac_scale(J, scale, scale_inv, first):
    """x_scale="jac": column norms of J, as a running maximum after the first point."""
    m, n = J.shape
    norms = np.empty(n)
    if n == 1:  # numpy reduces a single column as a vector: pairwise
        squares = np.empty(m)
        for i in range(m):
            squares[i] = J[i, 0] * J[i, 0]
        norms[0] = _pairwise_sum(squares)
    else:  # numpy's axis-0 sum of a C-ordered matrix adds the rows in order
        for k in range(n):
            norms[k] = J[0, k] * J[0, k]
        for i in range(1, m):
            for k in range(n):
                norms[k] += J[i, k] * J[i, k]
    for k in range(n):
        norm_k = math.sqrt(norms[k])
        if first:
            if norm_k == 0:
                norm_k = 1.0
        else:
            norm_k = _np_maximum(norm_k, scale_inv[k])
        scale_inv[k] = norm_k
        scale[k] = 1 / norm_k


# ============================================================================ the iteration
# State shared by the kernels. Vectors of length n are the rows of one (N_VECTORS, n) array,
# scalars live in a float and an int array (fewer arguments make the compiled call cheaper).

(_X, _G, _SCALE, _SCALE_INV, _LB, _UB, _V, _DV, _D, _DIAG_H, _G_H, _X_NEW, _STEP,
 _STEP_H) = range(14)
_N_VECTORS = 14
# The SVD of the (augmented) hat Jacobian: singular values s and U.T f are the rows of one
# (2, k) array ``su``, V is (n, k); k = n unless there are no bounds and fewer residuals.
_S, _UF = 0, 1

(_DELTA, _ALPHA, _COST, _COST_NEW, _PREDICTED, _STEP_H_NORM, _G_NORM, _THETA,
 _ACTUAL_REDUCTION, _FTOL, _XTOL, _GTOL, _HALF, _TWO) = range(14)
_N_REALS = 14

(_NFEV, _NJEV, _MAX_NFEV, _STATUS, _BOUNDED, _JAC_SCALE) = range(6)
_N_INTS = 6

_RUNNING = -1  # status while iterating (scipy's None)
_NEED_EVALUATION = 1
_DONE = 0


@_inlined
def _begin_iteration(vec, f, J, J_h, J_aug, f_aug, V, su, real, ints):
    """Top of scipy's outer loop: optimality test, then everything that depends only on the
    current point (hat-space scaling, SVD). Returns False when the iteration is over."""
    x, g, lb, ub = vec[_X], vec[_G], vec[_LB], vec[_UB]
    scale, scale_inv, v, dv = vec[_SCALE], vec[_SCALE_INV], vec[_V], vec[_DV]
    m, n = J.shape

    CL_scaling_vector(x, g, lb, ub, v, dv)
    g_norm = 0.0
    for i in range(n):
        g_norm = _np_maximum(g_norm, abs(g[i] * v[i]))
    real[_G_NORM] = g_norm
    if g_norm < real[_GTOL]:
        ints[_STATUS] = 1
    if ints[_STATUS] != _RUNNING or ints[_NFEV] == ints[_MAX_NFEV]:
        return False

    # Hat space: x_scale first, then Coleman-Li scaling in the scaled variables (components
    # with v identically 1 are not affected by the x_scale rescaling of v).
    d, diag_h, g_h = vec[_D], vec[_DIAG_H], vec[_G_H]
    for i in range(n):
        if dv[i] != 0:
            v[i] *= scale_inv[i]
        d[i] = math.sqrt(v[i]) * scale[i]
        diag_h[i] = g[i] * dv[i] * scale[i]  # C = diag(g * scale) Jv
        g_h[i] = d[i] * g[i]
    for r in range(m):
        for k in range(n):
            J_h[r, k] = J[r, k] * d[k]
    _copy2(J_aug, J_h)
    _copy(f_aug, f)
    if ints[_BOUNDED]:  # trf_bounds: SVD of [J_h; diag(diag_h**0.5)]; trf_no_bounds: of J_h
        for r in range(m, m + n):
            for k in range(n):
                J_aug[r, k] = 0.0
        for k in range(n):
            J_aug[m + k, k] = math.sqrt(diag_h[k])
    s, UT, V_ = _svd(J_aug)
    _copy(su[_S], s)
    _copy2(V, V_)
    _copy(su[_UF], _matvec(UT, f_aug))

    real[_THETA] = _builtin_max(0.995, 1 - g_norm)  # how far a step backs off from the bounds
    real[_ACTUAL_REDUCTION] = -1.0
    return True


@_inlined
def _next_trial(vec, J_h, V, su, real):
    """Trust-region step from the current point into vec[_X_NEW] (and _STEP, _STEP_H)."""
    x, lb, ub, d = vec[_X], vec[_LB], vec[_UB], vec[_D]
    m, n = J_h.shape
    Delta = real[_DELTA]
    p_h, real[_ALPHA] = solve_lsq_trust_region(n, m, su[_UF], su[_S], V, Delta, real[_ALPHA],
                                                 real[_HALF])
    p = _times(d, p_h)  # trust-region solution in the original space
    step, step_h, real[_PREDICTED] = select_step(
        x, J_h, vec[_DIAG_H], vec[_G_H], p, p_h, d, Delta, lb, ub, real[_THETA], real[_TWO])
    _copy(vec[_STEP], step)
    _copy(vec[_STEP_H], step_h)
    _trial_point(x, step, lb, ub, vec[_X_NEW])
    real[_STEP_H_NORM] = _norm(step_h)


@_inlined
def _accept_or_reject(vec, f, J, f_new, J_new, real, ints):
    """End of scipy's inner loop: move to the trial point if it reduced the cost."""
    if real[_ACTUAL_REDUCTION] > 0:
        _copy(vec[_X], vec[_X_NEW])
        _copy(f, f_new)
        _copy2(J, J_new)
        real[_COST] = real[_COST_NEW]
        ints[_NJEV] += 1
        _copy(vec[_G], _matvec(J.T, f))
        if ints[_JAC_SCALE]:
            compute_jac_scale(J, vec[_SCALE], vec[_SCALE_INV], ints[_NJEV] == 1)   # False (njev > 1)


@_inlined
def _start_trf(vec, f, J, J_h, J_aug, f_aug, V, su, real, ints):
    """Initialise at x = vec[_X] with residuals f and Jacobian J, and propose the first trial
    point. Returns _NEED_EVALUATION (evaluate at vec[_X_NEW], then call _advance_trf) or _DONE."""
    x, g, scale, scale_inv = vec[_X], vec[_G], vec[_SCALE], vec[_SCALE_INV]
    v, dv = vec[_V], vec[_DV]
    real[_COST] = 0.5 * np.dot(f, f)
    _copy(g, _matvec(J.T, f))
    if ints[_JAC_SCALE]:
        compute_jac_scale(J, scale, scale_inv, ints[_NJEV] == 1)   # True, not a literal: one specialization
    else:  # scale holds x_scale
        for i in range(x.size):
            scale_inv[i] = 1 / scale[i]
    CL_scaling_vector(x, g, vec[_LB], vec[_UB], v, dv)
    for i in range(x.size):
        if dv[i] != 0:
            v[i] *= scale_inv[i]
    scaled = np.empty(x.size)
    for i in range(x.size):
        scaled[i] = x[i] * scale_inv[i] / math.sqrt(v[i])
    Delta = _norm(scaled)
    real[_DELTA] = 1.0 if Delta == 0 else Delta
    real[_ALPHA] = 0.0  # Levenberg-Marquardt parameter
    if not _begin_iteration(vec, f, J, J_h, J_aug, f_aug, V, su, real, ints):
        return _DONE
    _next_trial(vec, J_h, V, su, real)
    return _NEED_EVALUATION


@_inlined
def _advance_trf(vec, f, J, f_new, J_new, failed, J_h, J_aug, f_aug, V, su, real, ints):
    """Take in the evaluation (f_new, J_new) at vec[_X_NEW] (``failed``: the model raised
    SolverError there) and run scipy's loop up to the next trial point. Returns
    _NEED_EVALUATION or _DONE."""
    ints[_NFEV] += 1
    finite = not failed
    if finite:
        for i in range(f_new.size):
            if not np.isfinite(f_new[i]):
                finite = False
                break
    inner_loop_over = False
    if not finite:  # a failed step: shrink the radius and try again
        real[_DELTA] = 0.25 * real[_STEP_H_NORM]
    else:
        Delta = real[_DELTA]
        real[_COST_NEW] = cost_new = 0.5 * np.dot(f_new, f_new)
        real[_ACTUAL_REDUCTION] = actual_reduction = real[_COST] - cost_new
        step_h_norm = real[_STEP_H_NORM]
        Delta_new, ratio = update_tr_radius(Delta, actual_reduction, real[_PREDICTED],
                                            step_h_norm, step_h_norm > 0.95 * Delta)
        status = check_termination(actual_reduction, real[_COST], _norm(vec[_STEP]), _norm(vec[_X]),
                                   ratio, real[_FTOL], real[_XTOL])
        if status != _RUNNING:
            ints[_STATUS] = status
            inner_loop_over = True
        else:
            real[_ALPHA] *= Delta / Delta_new
            real[_DELTA] = Delta_new
    if not inner_loop_over:
        inner_loop_over = not (real[_ACTUAL_REDUCTION] <= 0 and ints[_NFEV] < ints[_MAX_NFEV])
    if inner_loop_over:
        _accept_or_reject(vec, f, J, f_new, J_new, real, ints)
        if not _begin_iteration(vec, f, J, J_h, J_aug, f_aug, V, su, real, ints):
            return _DONE
    _next_trial(vec, J_h, V, su, real)
    return _NEED_EVALUATION


@_jit
def _reduces_cost(f_new, real):
    """Whether residuals f_new at the trial point would be accepted (finite, with a cost below
    the current point's): the test of :func:`_advance_trf` and :func:`_accept_or_reject`, in
    the same arithmetic. Only then is the trial point's Jacobian used."""
    for i in range(f_new.size):
        if not np.isfinite(f_new[i]):
            return False
    return real[_COST] - 0.5 * np.dot(f_new, f_new) > 0


@_jit
def _step(starting, vec, f, J, f_new, J_new, failed, J_h, J_aug, f_aug, V, su, real, ints):
    """The one compiled entry of the iteration (one entry point: numba generates the machine
    code of everything it calls once, not once per entry): :func:`_start_trf` when
    ``starting``, else :func:`_advance_trf`."""
    if starting:
        return _start_trf(vec, f, J, J_h, J_aug, f_aug, V, su, real, ints)
    return _advance_trf(vec, f, J, f_new, J_new, failed, J_h, J_aug, f_aug, V, su, real, ints)


# ============================================================================ Python driver

def _prepare(x0, lower, upper, x_scale, ftol, xtol, gtol, max_nfev):
    """least_squares' argument checks; x0 clipped into the bounds (scipy would raise)."""
    x0 = np.atleast_1d(np.asarray(x0, dtype=float))
    if x0.ndim != 1:
        raise ValueError("`x0` must have at most 1 dimension.")
    if not np.all(np.isfinite(x0)):
        raise ValueError("`x0` must be finite.")
    n = x0.size
    lb, ub = (np.full(n, b, dtype=float) if np.ndim(b) == 0 else np.ascontiguousarray(b, dtype=float)
              for b in (lower, upper))
    if lb.shape != x0.shape or ub.shape != x0.shape:
        raise ValueError("Inconsistent shapes between bounds and `x0`.")
    if np.any(lb >= ub):
        raise ValueError("Each lower bound must be strictly less than each upper bound.")
    if isinstance(x_scale, str):
        if x_scale != "jac":
            raise ValueError("`x_scale` must be 'jac' or array_like with positive numbers.")
    else:
        x_scale = np.asarray(x_scale, dtype=float)
        if not (np.all(np.isfinite(x_scale)) and np.all(x_scale > 0)):
            raise ValueError("`x_scale` must be 'jac' or array_like with positive numbers.")
        if x_scale.ndim == 0:
            x_scale = np.resize(x_scale, n)
        if x_scale.shape != x0.shape:
            raise ValueError("Inconsistent shapes between `x_scale` and `x0`.")
    tolerances = []
    for name, tol in (("ftol", ftol), ("xtol", xtol), ("gtol", gtol)):
        if tol is None:
            tol = 0.0
        elif tol < EPS:
            warnings.warn(f"Setting `{name}` below the machine epsilon ({EPS:.2e}) effectively "
                          "disables the corresponding termination condition.", stacklevel=3)
        tolerances.append(float(tol))
    if all(tol < EPS for tol in tolerances):
        raise ValueError(f"At least one of the tolerances must be higher than machine epsilon ({EPS:.2e}).")
    if max_nfev is None:
        max_nfev = 100 * n
    elif max_nfev <= 0:
        raise ValueError("`max_nfev` must be None or positive integer.")
    x0 = make_strictly_feasible(np.clip(x0, lb, ub), lb, ub, 1e-10)
    return x0, lb, ub, x_scale, tolerances, int(max_nfev)


def _as_evaluation(value, m, n, where):
    f, J = value
    f = np.ascontiguousarray(f, dtype=float)
    J = np.ascontiguousarray(J, dtype=float)
    if f.shape != (m,) or J.shape != (m, n):
        raise ValueError(f"fun_and_jac returned shapes {f.shape}, {J.shape} {where}; "
                         f"expected ({m},), ({m}, {n})")
    return f, J


def least_squares_trf(fun_and_jac, x0, lower, upper, *, x_scale="jac", ftol=1e-8, xtol=1e-8,
                      gtol=1e-8, max_nfev=None, stop=None, residuals=None) -> TRFResult:
    """Minimise 0.5 * ||r(x)||^2 subject to lower <= x <= upper by trust-region reflective.

    Same algorithm and iterates as ``scipy.optimize.least_squares(fun, x0, jac, bounds,
    method="trf", tr_solver="exact", x_scale=..., ftol=..., xtol=..., gtol=..., max_nfev=...)``.

    Parameters
    ----------
    fun_and_jac : callable ``x -> (r, J)``, residuals (m,) and Jacobian (m, n) at x. Raising
        :class:`~kinetics.errors.SolverError` at a trial point rejects that step (at ``x0`` the
        exception propagates).
    x0 : start; clipped into the bounds, then moved a relative 1e-10 inside (as scipy does).
    lower, upper : bounds (arrays of length n or scalars; +-inf for none).
    x_scale : ``"jac"`` (inverse running maximum of the Jacobian's column norms) or positive
        array (scalar broadcast).
    ftol, xtol, gtol, max_nfev : as in scipy (``max_nfev`` None: 100 * n).
    stop : optional ``(nfev, max_nfev, cost, x) -> bool``, asked before each trial evaluation
        with the cost of the current point and the point itself (a view the solver updates
        afterwards: copy what is kept); True ends the fit there (status -3). Not an option of
        scipy's: the fallback without numba ignores it.
    residuals : optional callable ``x -> r``, the residuals alone (cheaper than with the
        Jacobian: no sensitivities). From the first failed trial point on (``SolverError``
        or non-finite residuals: a model that cannot be simulated there), each trial point
        is evaluated by ``residuals`` first, and by ``fun_and_jac`` only if its cost is below
        the current point's (the only case where the trial's Jacobian is used: the step is
        accepted, and the algorithm's decision is then taken on ``fun_and_jac``'s
        residuals). A fit that has met such a region tends to meet it again (a larger radius
        after an accepted step leads back into it), and a failure with sensitivities costs a
        whole run with them; before that, most trial steps are accepted and a residuals-only
        evaluation first would cost more than it saves (the Bruno and Boehm PEtab problems:
        5-15 % slower). The trial points are the same either way. Not an option of scipy's;
        the fallback without numba ignores it.
    """
    x0, lb, ub, x_scale, (ftol, xtol, gtol), max_nfev = _prepare(
        x0, lower, upper, x_scale, ftol, xtol, gtol, max_nfev)
    # scipy's least_squares where numba is missing (the tests exercise this by monkeypatching) or
    # while a background process compiles these kernels (compile_notice.use_compiled)
    if not numba_available() or not use_compiled(_step, "the trust-region"):
        return _least_squares_scipy(fun_and_jac, x0, lb, ub, x_scale, ftol, xtol, gtol, max_nfev)

    n = x0.size
    f, J = fun_and_jac(x0.copy())
    f = np.atleast_1d(np.ascontiguousarray(f, dtype=float))
    if f.ndim != 1:
        raise ValueError(f"`fun` must return at most 1-d array_like. f0.shape: {f.shape}")
    m = f.size
    f, J = _as_evaluation((f, J), m, n, "at x0")
    if not np.all(np.isfinite(f)):
        raise ValueError("Residuals are not finite in the initial point.")

    bounded = not (np.all(lb == -np.inf) and np.all(ub == np.inf))
    vec = np.zeros((_N_VECTORS, n))
    vec[_X], vec[_LB], vec[_UB] = x0, lb, ub
    jac_scale = isinstance(x_scale, str)
    if not jac_scale:
        vec[_SCALE] = x_scale
    real = np.zeros(_N_REALS)
    real[_FTOL], real[_XTOL], real[_GTOL] = ftol, xtol, gtol
    real[_HALF], real[_TWO] = 0.5, 2.0
    ints = np.zeros(_N_INTS, dtype=np.int64)
    ints[_NFEV], ints[_NJEV], ints[_MAX_NFEV] = 1, 1, max_nfev
    ints[_STATUS], ints[_BOUNDED], ints[_JAC_SCALE] = _RUNNING, bounded, jac_scale
    rows = m + n if bounded else m
    k = min(rows, n)
    J_h, J_aug, f_aug = np.empty((m, n)), np.zeros((rows, n)), np.zeros(rows)
    V, su = np.empty((n, k)), np.empty((2, k))
    f, J = f.copy(), J.copy()  # the kernels update the current point in place
    f_new, J_new = f, J         # placeholders until the first trial evaluation
    workspace = (J_h, J_aug, f_aug, V, su, real, ints)

    x_new = vec[_X_NEW]
    code = _step(True, vec, f, J, f_new, J_new, False, *workspace)
    residuals_first = False     # see `residuals`: from the first failed trial point on
    while code == _NEED_EVALUATION:
        if stop is not None and stop(int(ints[_NFEV]), int(ints[_MAX_NFEV]), float(real[_COST]), vec[_X]):
            ints[_STATUS] = _STOPPED
            break
        try:
            if not residuals_first:
                f_new, J_new = _as_evaluation(fun_and_jac(x_new.copy()), m, n, "at a trial point")
            else:
                f_new, J_new = _as_evaluation((residuals(x_new.copy()), J), m, n, "at a trial point")
                if _reduces_cost(f_new, real):      # an accepted step: its Jacobian is needed
                    f_new, J_new = _as_evaluation(fun_and_jac(x_new.copy()), m, n, "at a trial point")
            failed = False
            if residuals is not None and not np.all(np.isfinite(f_new)):
                residuals_first = True
        except SolverError:
            failed = True
            residuals_first = residuals is not None
        code = _step(False, vec, f, J, f_new, J_new, failed, *workspace)

    status = int(ints[_STATUS])
    if status == _RUNNING:
        status = 0
    x = vec[_X].copy()
    if bounded:
        active_mask = find_active_constraints(x, lb, ub, xtol)
    else:
        active_mask = np.zeros(n, dtype=np.int64)
    return TRFResult(x=x, cost=float(real[_COST]), fun=f, jac=J, grad=vec[_G].copy(),
                     optimality=float(real[_G_NORM]), active_mask=active_mask,
                     nfev=int(ints[_NFEV]), njev=int(ints[_NJEV]), status=status,
                     message=TERMINATION_MESSAGES[status], success=status > 0)


def compile_kernels() -> None:
    """Compile (or load from numba's disk cache) the solver's kernels, in this process, by
    solving two tiny linear problems: with bounds and ``x_scale="jac"``, and unbounded with a
    given scale (the specializations a fit meets), and the residuals-first test."""
    from .compile_notice import compiling_in_foreground
    B = np.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]])
    b = np.array([1.0, 2.0, 3.0])

    def linear_residuals(z):
        return B @ z - b, B

    with compiling_in_foreground():
        least_squares_trf(linear_residuals, np.zeros(2), np.array([0.0, -np.inf]), np.array([0.5, np.inf]))
        least_squares_trf(linear_residuals, np.zeros(2), -np.inf, np.inf, x_scale=np.ones(2))
        _reduces_cost(b, np.zeros(_N_REALS))    # the residuals-first test (after a failed trial point)


def _least_squares_scipy(fun_and_jac, x0, lb, ub, x_scale, ftol, xtol, gtol, max_nfev):
    """The same fit by scipy (numba not installed): the Jacobian of the last evaluated point is
    cached, so scipy's separate ``jac`` call costs nothing."""
    from scipy.optimize import least_squares

    n = x0.size
    last = {"x": None, "J": None, "m": None, "calls": 0}

    def fun(x):
        first = last["calls"] == 0
        last["calls"] += 1
        try:
            f, J = fun_and_jac(np.array(x, dtype=float))
        except SolverError:
            if first:
                raise
            last["x"] = None
            return np.full(last["m"], np.inf)
        f = np.atleast_1d(np.asarray(f, dtype=float))
        last["m"] = f.size
        f, J = _as_evaluation((f, J), f.size, n, "")
        last["x"], last["J"] = np.array(x, dtype=float), J
        return f

    def jac(x):
        if last["x"] is None or not np.array_equal(x, last["x"]):
            fun(x)
        return last["J"]

    res = least_squares(fun, x0, jac=jac, bounds=(lb, ub), method="trf", tr_solver="exact",
                        x_scale=x_scale, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev)
    return TRFResult(x=res.x, cost=float(res.cost), fun=res.fun, jac=np.asarray(res.jac),
                     grad=res.grad, optimality=float(res.optimality),
                     active_mask=np.asarray(res.active_mask, dtype=np.int64),
                     nfev=last["calls"], njev=int(res.njev), status=int(res.status),
                     message=TERMINATION_MESSAGES[int(res.status)], success=bool(res.success))
