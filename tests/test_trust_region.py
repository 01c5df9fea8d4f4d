"""kinetics.trust_region: the compiled port of scipy's TRF must reproduce
``scipy.optimize.least_squares(method="trf")`` iterate for iterate.

Each comparison records every point at which the residuals are evaluated, by the port and
by scipy, and requires the same sequence (to 1e-12 relative; on the reference machine they are
bit-identical), hence the same nfev, status and optimum.

The overhead figures for the fit task are printed by
``.venv/bin/pytest tests/test_trust_region.py -k overhead -s`` (or by running this file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy.optimize import least_squares, lsq_linear

from kinetics.numerics import trust_region
from kinetics.errors import SolverError
from kinetics.numerics.trust_region import TERMINATION_MESSAGES, TRFResult, least_squares_trf

from conftest import FIT_TASK_DIR

FIT_TASK = FIT_TASK_DIR

pytestmark = pytest.mark.skipif(not trust_region.numba_available(), reason="numba not installed")


# ------------------------------------------------------------------------------ helpers
def run_scipy(fun_and_jac, x0, lower, upper, *, x_scale="jac", ftol=1e-8, xtol=1e-8, gtol=1e-8,
              max_nfev=None, solver_error_as_inf=False):
    """scipy's least_squares on the same function; returns (result, evaluated points).

    x0 is clipped into the bounds first (the port does that, scipy would raise)."""
    points, last = [], {}

    def fun(x):
        points.append(np.array(x, dtype=float))
        try:
            f, J = fun_and_jac(x)
        except SolverError:
            if not solver_error_as_inf:
                raise
            return np.full(last["m"], np.inf)
        last["J"], last["m"] = J, len(f)
        return f

    x0 = np.clip(np.asarray(x0, dtype=float), lower, upper)
    result = least_squares(fun, x0, jac=lambda x: last["J"], bounds=(lower, upper), method="trf",
                           x_scale=x_scale, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev)
    return result, points


def run_port(fun_and_jac, x0, lower, upper, **options):
    points = []

    def recorded(x):
        points.append(x.copy())
        return fun_and_jac(x)

    return least_squares_trf(recorded, x0, lower, upper, **options), points


def assert_same_as_scipy(fun_and_jac, x0, lower, upper, rtol=1e-12, **options):
    port, port_points = run_port(fun_and_jac, x0, lower, upper, **options)
    ref, ref_points = run_scipy(fun_and_jac, x0, lower, upper, **options)
    assert isinstance(port, TRFResult)
    assert port.nfev == ref.nfev == len(port_points) == len(ref_points)
    assert port.status == ref.status
    assert port.message == ref.message and port.success == ref.success
    for a, b in zip(port_points, ref_points):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(port.x, ref.x, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(port.cost, ref.cost, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(port.fun, ref.fun, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(port.grad, ref.grad, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(port.optimality, ref.optimality, rtol=1e-9, atol=1e-14)
    np.testing.assert_array_equal(port.active_mask, ref.active_mask)
    assert port.njev == ref.njev
    return port, ref


def rosenbrock(x):
    return (np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]]),
            np.array([[-20 * x[0], 10.0], [-1.0, 0.0]]))


_rng = np.random.default_rng(1)
_T = np.linspace(0, 5, 25)
_Y = 3 * np.exp(-1.3 * _T) + 0.5 + 0.02 * _rng.standard_normal(25)


def decay(x):
    """Exponential decay plus offset: a*exp(-k t) + c, noisy data."""
    e = np.exp(-x[1] * _T)
    return x[0] * e + x[2] - _Y, np.column_stack([e, -x[0] * _T * e, np.ones_like(_T)])


DECAY_LO, DECAY_HI = np.array([0.0, 0.0, -1.0]), np.array([10.0, 5.0, 1.0])


def linear(A, b):
    return lambda x: (A @ x - b, A)


# ------------------------------------------------------------------------------ same iterates as scipy
def test_bounded_linear_least_squares_matches_lsq_linear_and_scipy():
    rng = np.random.default_rng(42)
    A = rng.standard_normal((20, 5))
    b = rng.standard_normal(20) * 2
    lo = np.array([-0.3, -0.3, -0.3, -np.inf, -np.inf])
    hi = np.array([0.3, 0.3, 0.3, np.inf, np.inf])
    tol = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)
    port, _ = assert_same_as_scipy(linear(A, b), np.zeros(5), lo, hi, **tol)
    exact = lsq_linear(A, b, bounds=(lo, hi), method="bvls", tol=1e-14)
    np.testing.assert_allclose(port.x, exact.x, atol=1e-8)
    assert np.any(exact.active_mask != 0) and np.any(exact.active_mask == 0)
    np.testing.assert_array_equal(port.active_mask, exact.active_mask)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("x_scale", ["jac", "array"])
def test_random_linear_problems(seed, x_scale):
    """Random sizes (including one variable, and fewer residuals than variables without
    bounds), random bounds, random tolerances."""
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(2, 30)), int(rng.integers(1, 8))
    bounded = seed % 3 != 2
    if not bounded:
        m = int(rng.integers(1, n + 2))
    A = rng.standard_normal((m, n))
    b = 3 * rng.standard_normal(m)
    lo = rng.uniform(-1, 0, n) if bounded else np.full(n, -np.inf)
    hi = lo + rng.uniform(0.1, 2, n) if bounded else np.full(n, np.inf)
    x0 = rng.uniform(lo, hi) if bounded else rng.standard_normal(n)
    scale = "jac" if x_scale == "jac" else rng.uniform(0.5, 2, n)
    tol = {name: 10.0 ** -int(rng.integers(6, 12)) for name in ("ftol", "xtol", "gtol")}
    assert_same_as_scipy(linear(A, b), x0, lo, hi, x_scale=scale, **tol)


@pytest.mark.parametrize("x_scale", ["jac", np.array([1.0, 2.0]), 0.5])
@pytest.mark.parametrize("bounds", ["none", "active upper", "box"])
def test_rosenbrock(x_scale, bounds):
    lo, hi = {"none": (-np.inf, np.inf),
              "active upper": (np.array([-np.inf, -np.inf]), np.array([0.8, np.inf])),
              "box": (np.array([-2.0, -1.0]), np.array([2.0, 3.0]))}[bounds]
    port, _ = assert_same_as_scipy(rosenbrock, np.array([-1.2, 1.0]), lo, hi, x_scale=x_scale)
    if bounds == "active upper":
        assert port.active_mask.tolist() == [1, 0]
        assert port.x[0] == pytest.approx(0.8)
    else:
        np.testing.assert_allclose(port.x, [1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("x0", [[1.0, 0.2, 0.0], [8.0, 0.1, 0.0], [0.5, 3.0, -0.5]])
@pytest.mark.parametrize("x_scale", ["jac", np.array([1.0, 0.1, 1.0])])
def test_exponential_decay_fit(x0, x_scale):
    port, _ = assert_same_as_scipy(decay, np.array(x0), DECAY_LO, DECAY_HI, x_scale=x_scale)
    np.testing.assert_allclose(port.x, [3.0, 1.3, 0.5], rtol=0.05, atol=0.02)


def test_exponential_decay_unbounded():
    assert_same_as_scipy(decay, np.array([1.0, 0.5, 0.0]), -np.inf, np.inf)


@pytest.mark.parametrize("x0", [[0.0, 0.2, 0.0],            # on a lower bound
                                [10.0, 5.0, 1.0],           # on upper bounds
                                [1e-12, 0.2, 1.0 - 1e-13],  # just inside
                                [-1.0, 7.0, 0.0]])          # outside: clipped
def test_start_on_or_near_a_bound(x0):
    port, _ = assert_same_as_scipy(decay, np.array(x0), DECAY_LO, DECAY_HI)
    assert port.success


def test_start_outside_the_bounds_is_clipped_then_moved_inside():
    seen = []
    least_squares_trf(lambda x: (seen.append(x.copy()), decay(x))[1], [-1.0, 7.0, 0.0],
                      DECAY_LO, DECAY_HI, max_nfev=1)
    # as scipy's make_strictly_feasible(x0, lb, ub, rstep=1e-10)
    np.testing.assert_array_equal(seen[0], [1e-10, 5.0 - 5e-10, 0.0])


@pytest.mark.parametrize("bounded", [True, False])
def test_rank_deficient_jacobian(bounded):
    rng = np.random.default_rng(7)
    A = rng.standard_normal((12, 4))
    A[:, 3] = A[:, 0] - A[:, 1]  # rank 3
    b = rng.standard_normal(12)
    lo, hi = (np.full(4, -0.5), np.full(4, 0.5)) if bounded else (-np.inf, np.inf)
    assert_same_as_scipy(linear(A, b), np.full(4, 0.1), lo, hi)


def test_quadratic_residuals_with_a_zero_jacobian_column():
    """A parameter that the residuals ignore (zero column: x_scale 'jac' uses 1 for it)."""
    def fun(x):
        r = np.array([x[0] ** 2 - 2.0, x[0] - x[2], 0.1 * x[2] ** 3 - 0.05])
        return r, np.array([[2 * x[0], 0.0, 0.0], [1.0, 0.0, -1.0], [0.0, 0.0, 0.3 * x[2] ** 2]])
    assert_same_as_scipy(fun, np.array([3.0, 1.0, 2.0]), np.array([0.0, -1.0, -5.0]), np.array([5.0, 1.0, 5.0]))


# ------------------------------------------------------------------------------ seeded fuzz against scipy
def random_problem(rng):
    """One random least-squares problem: (fun_and_jac, x0, lower, upper, options). Linear,
    sums of exponentials fitted to noisy data, chained Rosenbrock or quadratic residuals; no,
    some or all bounds; x_scale "jac" or an array; random tolerances, sometimes a small max_nfev."""
    kind = int(rng.integers(4))
    if kind == 0:
        m, n = int(rng.integers(1, 25)), int(rng.integers(1, 7))
        A = rng.standard_normal((m, n)) * 10.0 ** rng.uniform(-2, 2, n)   # badly scaled columns
        b = 3 * rng.standard_normal(m)
        fun, centre = linear(A, b), np.zeros(n)
    elif kind == 1:
        q = int(rng.integers(1, 3))
        n = 2 * q
        t = np.sort(rng.uniform(0, 5, int(rng.integers(n + 1, 30))))
        truth = np.concatenate([rng.uniform(0.5, 3, q), rng.uniform(0.1, 3, q)])

        def model(x):
            e = np.exp(-np.outer(t, x[q:]))
            return e @ x[:q], np.hstack([e, -t[:, None] * e * x[:q]])
        y = model(truth)[0] * (1 + 0.05 * rng.standard_normal(len(t)))

        def fun(x):
            f, J = model(x)
            return f - y, J
        centre = truth
    elif kind == 2:
        n = int(rng.integers(2, 6))

        def fun(x):
            J = np.zeros((2 * (n - 1), n))
            for i in range(n - 1):
                J[i, i], J[i, i + 1], J[n - 1 + i, i] = -20 * x[i], 10.0, -1.0
            return np.concatenate([10 * (x[1:] - x[:-1] ** 2), 1 - x[:-1]]), J
        centre = np.ones(n)
    else:
        m, n = int(rng.integers(2, 15)), int(rng.integers(1, 5))
        c, B, Q = rng.standard_normal(m), rng.standard_normal((m, n)), 0.3 * rng.standard_normal((m, n))

        def fun(x):
            return c + B @ x + 0.5 * Q @ (x ** 2), B + Q * x
        centre = np.zeros(n)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    bounds = int(rng.integers(3))
    if bounds:
        lo, hi = centre - rng.uniform(0.05, 2, n), centre + rng.uniform(0.05, 2, n)
        if bounds == 1:  # some sides open
            lo[rng.random(n) < 0.4] = -np.inf
            hi[rng.random(n) < 0.4] = np.inf
    x0 = centre + rng.uniform(-1.5, 1.5, n)        # sometimes outside the bounds: clipped
    options = {name: 10.0 ** -float(rng.integers(6, 13)) for name in ("ftol", "xtol", "gtol")}
    options["x_scale"] = "jac" if rng.random() < 0.6 else rng.uniform(0.2, 5, n)
    options["max_nfev"] = int(rng.integers(3, 40)) if rng.random() < 0.15 else None
    return fun, x0, lo, hi, options


FUZZ_PROBLEMS = 2000


def test_fuzz_same_trial_points_as_scipy_on_random_problems():
    """The README's claim, checked: on FUZZ_PROBLEMS seeded random problems the port evaluates
    the same trial points as scipy. Bit for bit on most; where LAPACK builds round differently
    (numba's and numpy's), the points agree to rounding, which a long run along a flat valley
    can rarely amplify into a different path (1 of the 2,000 here)."""
    rng = np.random.default_rng(20240611)
    identical = same_path = 0
    for _ in range(FUZZ_PROBLEMS):
        fun, x0, lo, hi, options = random_problem(rng)
        with np.errstate(all="ignore"):
            port, port_points = run_port(fun, x0, lo, hi, **options)
            ref, ref_points = run_scipy(fun, x0, lo, hi, **options)
        assert port.nfev == len(port_points) and ref.nfev == len(ref_points)
        if len(port_points) == len(ref_points) and port.status == ref.status:
            if all(np.array_equal(a, b) for a, b in zip(port_points, ref_points)):
                identical += 1
                assert np.array_equal(port.x, ref.x) and port.cost == ref.cost
            if all(np.allclose(a, b, rtol=1e-9, atol=1e-15) for a, b in zip(port_points, ref_points)):
                same_path += 1
                np.testing.assert_allclose(port.x, ref.x, rtol=1e-9, atol=1e-15)
                np.testing.assert_allclose(port.cost, ref.cost, rtol=1e-9, atol=1e-18)
    print(f"\n{FUZZ_PROBLEMS} random problems: {identical} bit for bit, {same_path} same trial points to 1e-9")
    assert same_path >= 0.995 * FUZZ_PROBLEMS
    assert identical >= 0.95 * FUZZ_PROBLEMS


# ------------------------------------------------------------------------------ failures at trial points
def test_solver_error_at_a_trial_point_is_a_failed_step_like_a_non_finite_residual():
    raised = []

    def fragile(x):
        if x[2] > 0.6:  # the path from this start crosses it, the optimum (c = 0.5) does not
            raised.append(x.copy())
            raise SolverError(f"simulation failed at {x}")
        return decay(x)

    x0 = np.array([1.0, 0.2, 0.0])
    port, port_points = run_port(fragile, x0, DECAY_LO, DECAY_HI)
    ref, ref_points = run_scipy(fragile, x0, DECAY_LO, DECAY_HI, solver_error_as_inf=True)
    assert raised and port.success
    assert port.nfev == ref.nfev and port.status == ref.status
    for a, b in zip(port_points, ref_points):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(port.x, ref.x, rtol=1e-12)
    np.testing.assert_allclose(port.x, [3.0, 1.3, 0.5], rtol=0.05, atol=0.02)


def test_non_finite_residuals_at_a_trial_point_match_scipy():
    def fragile(x):
        f, J = decay(x)
        return (f + np.nan if x[2] > 0.6 else f), J
    assert_same_as_scipy(fragile, np.array([1.0, 0.2, 0.0]), DECAY_LO, DECAY_HI)


def test_solver_error_at_the_start_propagates():
    def broken(x):
        raise SolverError("no")
    with pytest.raises(SolverError):
        least_squares_trf(broken, np.ones(3), DECAY_LO, DECAY_HI)


def test_non_finite_start_is_rejected_like_scipy():
    with pytest.raises(ValueError, match="not finite in the initial point"):
        least_squares_trf(lambda x: (np.array([np.inf, 1.0]), np.eye(2)), np.zeros(2), -1, 1)


# ------------------------------------------------------------------------------ termination
@pytest.mark.parametrize("options, status", [
    (dict(), 1),                                     # Rosenbrock reaches zero gradient
    (dict(max_nfev=5), 0),
])
def test_rosenbrock_termination(options, status):
    port, _ = assert_same_as_scipy(rosenbrock, np.array([-1.2, 1.0]), -np.inf, np.inf, **options)
    assert port.status == status
    assert port.message == TERMINATION_MESSAGES[status]
    assert port.success == (status > 0)
    if "max_nfev" in options:
        assert port.nfev == options["max_nfev"]


@pytest.mark.parametrize("tolerances, status", [
    (dict(), 1),
    (dict(gtol=None), 2),
    (dict(ftol=None, gtol=None), 3),
    (dict(ftol=1e-3, xtol=1e-3, gtol=None), 4),
    (dict(max_nfev=4), 0),
    (dict(max_nfev=1), 0),
])
def test_decay_termination(tolerances, status):
    port, _ = assert_same_as_scipy(decay, np.array([1.0, 0.5, 0.0]), DECAY_LO, DECAY_HI, **tolerances)
    assert port.status == status
    assert port.message == TERMINATION_MESSAGES[status]
    if "max_nfev" in tolerances:
        assert port.nfev == tolerances["max_nfev"]


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("bounded", [False, True])
def test_default_max_nfev_is_100_n(n, bounded):
    # r = x**3: each Gauss-Newton step only shrinks x by a third, the relative cost reduction
    # stays near 0.9 (ftol never met) and xtol/gtol are off, so only max_nfev can stop it
    def cubic(x):
        return x ** 3, np.diag(3 * x ** 2)
    lo, hi = (np.full(n, -1.0), np.full(n, 1.0)) if bounded else (-np.inf, np.inf)
    port, ref = assert_same_as_scipy(cubic, np.linspace(0.9, -0.5, n), lo, hi, xtol=None, gtol=None)
    assert port.nfev == ref.nfev == 100 * n
    assert port.status == 0 and port.message == TERMINATION_MESSAGES[0]


def test_argument_errors_like_scipy():
    fun = linear(np.eye(2), np.ones(2))
    with pytest.raises(ValueError, match="strictly less"):
        least_squares_trf(fun, np.zeros(2), np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="x_scale"):
        least_squares_trf(fun, np.zeros(2), -1, 1, x_scale=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="x_scale"):
        least_squares_trf(fun, np.zeros(2), -1, 1, x_scale="auto")
    with pytest.raises(ValueError, match="tolerances"):
        least_squares_trf(fun, np.zeros(2), -1, 1, ftol=None, xtol=None, gtol=None)
    with pytest.raises(ValueError, match="max_nfev"):
        least_squares_trf(fun, np.zeros(2), -1, 1, max_nfev=0)
    with pytest.raises(ValueError, match="shapes"):
        least_squares_trf(lambda x: (np.ones(2), np.ones((3, 2))), np.zeros(2), -1, 1)


# ------------------------------------------------------------------------------ without numba
def _same_result(a: TRFResult, b: TRFResult):
    assert (a.nfev, a.njev, a.status, a.message, a.success) == (b.nfev, b.njev, b.status, b.message, b.success)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-12)
    np.testing.assert_allclose(a.cost, b.cost, rtol=1e-12)
    np.testing.assert_allclose(a.jac, b.jac, rtol=1e-12)
    np.testing.assert_array_equal(a.active_mask, b.active_mask)


@pytest.mark.parametrize("case", ["decay", "rosenbrock bounded", "solver error", "max_nfev"])
def test_fallback_to_scipy_gives_the_same_result(monkeypatch, case):
    def fragile(x):
        if x[2] > 0.6:
            raise SolverError("failed")
        return decay(x)
    fun, x0, lo, hi, options = {
        "decay": (decay, [1.0, 0.5, 0.0], DECAY_LO, DECAY_HI, dict(x_scale=np.array([1.0, 0.1, 1.0]))),
        "rosenbrock bounded": (rosenbrock, [-1.2, 1.0], np.array([-np.inf, -np.inf]), np.array([0.8, np.inf]), {}),
        "solver error": (fragile, [1.0, 0.2, 0.0], DECAY_LO, DECAY_HI, {}),
        "max_nfev": (decay, [1.0, 0.5, 0.0], DECAY_LO, DECAY_HI, dict(max_nfev=3)),
    }[case]
    compiled = least_squares_trf(fun, np.array(x0), lo, hi, **options)
    monkeypatch.setattr(trust_region, "numba_available", lambda: False)
    fallback = least_squares_trf(fun, np.array(x0), lo, hi, **options)
    _same_result(fallback, compiled)


def test_module_works_where_numba_cannot_be_imported():
    code = (
        "import json, sys; sys.modules['numba'] = None\n"
        "import numpy as np\n"
        "from kinetics.numerics import trust_region as tr\n"
        "assert not tr.numba_available()\n"
        "r = tr.least_squares_trf(lambda x: (np.array([x[0] - 2.0, 3 * x[1] + 1.0]), np.diag([1.0, 3.0])),"
        " [0.5, 0.5], [0.0, 0.0], [1.0, 1.0])\n"
        "print(json.dumps([r.status, r.nfev, r.active_mask.tolist(), r.x.tolist()]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    status, nfev, active_mask, x = json.loads(out.stdout)
    compiled = least_squares_trf(lambda x: (np.array([x[0] - 2.0, 3 * x[1] + 1.0]), np.diag([1.0, 3.0])),
                                 [0.5, 0.5], [0.0, 0.0], [1.0, 1.0])
    assert [status, nfev, active_mask] == [compiled.status, compiled.nfev, compiled.active_mask.tolist()]
    np.testing.assert_allclose(x, compiled.x, rtol=1e-12)
    assert active_mask == [1, -1]


def test_threads_give_the_sequential_results():
    from concurrent.futures import ThreadPoolExecutor
    starts = [np.array(x0) for x0 in ([1.0, 0.2, 0.0], [8.0, 0.1, 0.0], [0.5, 3.0, -0.5], [5.0, 4.0, 0.9])]
    sequential = [least_squares_trf(decay, x0, DECAY_LO, DECAY_HI) for x0 in starts]
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(lambda x0: least_squares_trf(decay, x0, DECAY_LO, DECAY_HI), starts))
    for a, b in zip(threaded, sequential):
        _same_result(a, b)


def test_warm_up_runs():
    import kinetics
    assert kinetics.warm_up() >= 0.0


# ------------------------------------------------------------------------------ the fit task
@pytest.fixture(scope="module")
def fit_task():
    if not (FIT_TASK / "fit.toml").exists():
        pytest.skip("reference fit task not available")
    from kinetics.fitting.optimize import latin_starts
    from kinetics.fitting.problem import load_fit_spec
    problem = load_fit_spec(FIT_TASK)
    lo, hi = problem.internal_bounds()
    starts = latin_starts(problem, 4, 0)  # problem.start() and 3 Latin-hypercube points
    return problem, lo, hi, starts


@pytest.mark.parametrize("start", range(4))
def test_fit_task_matches_scipy(fit_task, start):
    problem, lo, hi, starts = fit_task
    fun_and_jac = lambda x: problem.residuals_and_jacobian(x, None)  # noqa: E731
    options = dict(x_scale="jac", ftol=1e-10, xtol=1e-10, gtol=1e-10)
    port, port_points = run_port(fun_and_jac, starts[start], lo, hi, **options)
    ref, ref_points = run_scipy(fun_and_jac, starts[start], lo, hi, **options)
    assert port.cost == pytest.approx(ref.cost, rel=1e-10)
    assert abs(port.nfev - ref.nfev) <= 2
    assert port.status == ref.status
    np.testing.assert_allclose(port.x, ref.x, rtol=1e-8, atol=1e-10)
    print(f"\nfit task start {start}: nfev port {port.nfev} scipy {ref.nfev}, cost {port.cost:.15g} vs "
          f"{ref.cost:.15g}, max |x diff| {np.max(np.abs(port.x - ref.x)):.1e}, identical trial points: "
          f"{len(port_points) == len(ref_points) and all(np.array_equal(a, b) for a, b in zip(port_points, ref_points))}")


def measure_overhead(problem, lo, hi, x0, repeats=15):
    """Per-evaluation time of the optimizer itself on the fit task: the evaluations of a real
    run are recorded, then replayed by a function that only returns the next one."""
    fun_and_jac = lambda x: problem.residuals_and_jacobian(x, None)  # noqa: E731
    options = dict(x_scale="jac", ftol=1e-10, xtol=1e-10, gtol=1e-10)
    tape = []
    least_squares_trf(lambda x: (tape.append(fun_and_jac(x)), tape[-1])[1], x0, lo, hi, **options)

    def port():
        replay = iter(tape)
        return least_squares_trf(lambda x: next(replay), x0, lo, hi, **options)

    def scipy():
        replay, last = iter(tape), {}

        def fun(x):
            f, last["J"] = next(replay)
            return f
        return least_squares(fun, np.clip(x0, lo, hi), jac=lambda x: last["J"], bounds=(lo, hi),
                             method="trf", **options)

    timings = {}
    for name, run in (("port", port), ("scipy", scipy)):
        assert run().nfev == len(tape)
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        timings[name] = best / len(tape) * 1e6
    t0 = time.perf_counter()
    for _ in range(50):
        fun_and_jac(x0)
    timings["model"] = (time.perf_counter() - t0) / 50 * 1e6
    return len(tape), timings


def test_overhead_per_evaluation(fit_task):
    problem, lo, hi, starts = fit_task
    nfev, us = measure_overhead(problem, lo, hi, starts[2])
    print(f"\nTRF overhead per evaluation on the fit task (40x6, {nfev} evaluations, replayed): "
          f"port {us['port']:.1f} µs, scipy {us['scipy']:.1f} µs; one model evaluation {us['model']:.0f} µs")
    assert us["port"] < 0.5 * us["scipy"]


if __name__ == "__main__":  # pragma: no cover
    from kinetics.fitting.optimize import latin_starts
    from kinetics.fitting.problem import load_fit_spec
    problem = load_fit_spec(FIT_TASK)
    lo, hi = problem.internal_bounds()
    import kinetics
    kinetics.warm_up()
    for x0 in latin_starts(problem, 4, 0):
        nfev, us = measure_overhead(problem, lo, hi, x0, repeats=30)
        print(f"{nfev:3d} evaluations: port {us['port']:6.1f} µs, scipy {us['scipy']:6.1f} µs per evaluation"
              f" (model {us['model']:.0f} µs)")


# ------------------------------------------------------------------------------ residuals first
@pytest.mark.parametrize("case", ["rosenbrock", "solver error", "non-finite"])
def test_residuals_first_after_a_failed_trial_same_iterates_fewer_jacobians(case):
    # with residuals=..., from the first failed trial point on (SolverError or non-finite
    # residuals) each trial point is evaluated without its Jacobian first and with it only
    # where the step is accepted: the same trial points, result and nfev/njev as without;
    # before any failure (rosenbrock: rejected steps, none failed) fun_and_jac alone
    calls = {"residuals": 0, "both": 0}
    if case == "rosenbrock":     # rejected steps along the curved valley
        model, x0, lo, hi = rosenbrock, np.array([-1.2, 1.0]), np.array([-2.0, -2.0]), np.array([2.0, 2.0])
        optimum = [1.0, 1.0]
    else:
        def model(x):
            if x[2] > 0.4:      # cuts off the optimum (c = 0.5): trials keep failing near c = 0.4
                if case == "solver error":
                    raise SolverError(f"simulation failed at {x}")
                return decay(x)[0] + np.nan, decay(x)[1]
            return decay(x)
        x0, lo, hi, optimum = np.array([1.0, 0.2, 0.0]), DECAY_LO, DECAY_HI, None

    def both(x):
        calls["both"] += 1
        return model(x)

    def residuals(x):
        calls["residuals"] += 1
        return model(x)[0]

    plain = least_squares_trf(model, x0, lo, hi, ftol=1e-10, xtol=1e-10, gtol=1e-10)
    first = least_squares_trf(both, x0, lo, hi, ftol=1e-10, xtol=1e-10, gtol=1e-10, residuals=residuals)
    _same_result(first, plain)
    np.testing.assert_array_equal(first.x, plain.x)
    if optimum is not None:
        np.testing.assert_allclose(first.x, optimum, rtol=1e-6)
    else:
        assert 0.39 < first.x[2] <= 0.4
    assert plain.njev < plain.nfev      # rejected steps
    if case == "rosenbrock":
        assert calls == {"residuals": 0, "both": plain.nfev}
    else:   # every trial point once by either, after the first failure a second time only if accepted
        assert calls["residuals"] > 0 and calls["both"] < plain.nfev
        assert plain.njev <= calls["both"] and calls["residuals"] + calls["both"] - plain.nfev <= plain.njev
