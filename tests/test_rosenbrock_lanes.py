"""The lock-step ensemble integrator (kinetics.numerics.rosenbrock_lanes): per problem, the values,
status and step count of the scalar Rodas5P (kinetics.numerics.rosenbrock.integrate) to the
last bit, on every branch of the integrator (rejections, the dense-LU fallback, df/dt from a
tape and by finite differences, failures, outputs at t0), whatever the number of lanes."""

import numpy as np
import pytest
import sympy as sp

pytest.importorskip("numba")

from kinetics.codegen.tape import build_tapes  # noqa: E402
from kinetics.numerics import rosenbrock_lanes  # noqa: E402
from kinetics.numerics.rosenbrock import (STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK,  # noqa: E402
                                          STATUS_STEP_UNDERFLOW, integrate)

T = sp.Symbol("t", real=True)
RNG = np.random.default_rng(12)


def exo_sat():
    EE, MVB, LYS, P, Tt, U = states = sp.symbols("EE MVB LYS P T_ U")
    s_endo, k_rec, k_mat, k_lys, k_sec, k_pt, k_tp, Vmax, Km = params = sp.symbols(
        "s_endo k_rec k_mat k_lys k_sec k_pt k_tp Vmax Km")
    clearance = Vmax * P / (Km + P)
    f = [s_endo - k_rec * EE - k_mat * EE, k_mat * EE - k_lys * MVB - k_sec * MVB, k_lys * MVB,
         k_sec * MVB - k_pt * P + k_tp * Tt - clearance, k_pt * P - k_tp * Tt, clearance]
    values = np.array([1000, 0.3, 0.5, 0.8, 0.2, 2.0, 0.5, 400, 50.0])
    N = 70     # not a multiple of the lanes; with chunk=16, five ranges on the threads
    P_ = values * np.exp(RNG.uniform(-np.log(3), np.log(3), (N, len(values))))
    return build_tapes(f, T, states, params), np.zeros((N, 6)), P_, np.logspace(-1, np.log10(48), 20), {}


def robertson():
    """Stiff, with rejected steps; two of the rate constants varied."""
    y1, y2, y3, k1, k2, k3 = sp.symbols("y1 y2 y3 k1 k2 k3")
    f = [-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2**2, k2 * y2**2]
    N = 20
    P_ = np.column_stack([0.04 * RNG.uniform(0.5, 2, N), 3e7 * RNG.uniform(0.5, 2, N), np.full(N, 1e4)])
    Y0 = np.tile([1.0, 0.0, 0.0], (N, 1))
    return build_tapes(f, T, [y1, y2, y3], [k1, k2, k3]), Y0, P_, np.array([1e-4, 1e-2, 1.0, 10.0, 40.0]), {}


def strong_coupling():
    """y2 fed by 1000 y1: once the steps grow past ~0.05, the pivot I/(h gamma) + 1 of the
    unpivoted sparse LU is below a tenth of the 1000 under it (the threshold test fails) and
    the lane falls back to the dense LU with partial pivoting (from the second step on, some
    problems only)."""
    y1, y2, a, b = sp.symbols("y1 y2 a b")
    N = 12
    P_ = np.column_stack([RNG.uniform(0.5, 2, N), RNG.uniform(1e2, 3e3, N)])
    return (build_tapes([-a * y1, b * y1 - y2], T, [y1, y2], [a, b]), np.tile([1.0, 0.0], (N, 1)), P_,
            np.linspace(0, 10, 11), {})


def forced(with_dfdt):
    """A right-hand side that reads t: df/dt from its tape, or by central differences."""
    def build():
        x, a = sp.symbols("x a")
        rhs, jac, dfdt = build_tapes([-a * x + sp.sin(T)], T, [x], [a])
        N = 9
        return ((rhs, jac, dfdt if with_dfdt else None), RNG.uniform(0, 2, (N, 1)), RNG.uniform(0.5, 3, (N, 1)),
                np.linspace(0.5, 12, 12), {})
    return build


def blow_up():
    """x' = c x^2 from x0: 1/(1/x0 - c t) blows up inside the interval for some problems."""
    x, c = sp.symbols("x c")
    N = 10
    return (build_tapes([c * x**2], T, [x], [c]), RNG.uniform(0.2, 1.5, (N, 1)), RNG.uniform(0.1, 1, (N, 1)),
            np.array([0.5, 0.9, 1.5, 2.0, 4.0]), {})


def few_steps_allowed():
    x, k = sp.symbols("x k")
    N = 6
    return build_tapes([-k * x], T, [x], [k]), np.ones((N, 1)), RNG.uniform(0.5, 50, (N, 1)), np.array([100.0]), \
        {"max_steps": 7}


def outputs_at_t0():
    x, k = sp.symbols("x k")
    N = 5
    return (build_tapes([-k * x], T, [x], [k]), RNG.uniform(1, 2, (N, 1)), RNG.uniform(0.5, 2, (N, 1)),
            np.array([0.0, 0.0, 0.3, 2.0]), {})


PROBLEMS = {"exo_sat": exo_sat, "robertson": robertson, "strong_coupling": strong_coupling, "forced_dfdt": forced(True),
            "forced_finite_difference": forced(False), "blow_up": blow_up, "max_steps": few_steps_allowed,
            "outputs_at_t0": outputs_at_t0}


@pytest.mark.parametrize("lanes", [1, 8, 32])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_every_problem_equals_its_single_integration_to_the_last_bit(name, lanes):
    (rhs, jac, dfdt), Y0, P, times, options = PROBLEMS[name]()
    rtol, atol = 1e-8, 1e-10
    Y, status, steps = rosenbrock_lanes.integrate_many(rhs, jac, Y0, P, 0.0, times, rtol, atol, dfdt=dfdt,
                                                       lanes=lanes, chunk=16, **options)
    total = 0
    for s in range(len(Y0)):
        Ys, st, n_steps, _ = integrate(rhs, jac, Y0[s], P[s], 0.0, times, rtol, atol, dfdt=dfdt, **options)
        np.testing.assert_array_equal(Y[s], Ys, err_msg=f"{name}, problem {s}")   # nan where the other is nan
        assert status[s] == st, (name, s)
        total += n_steps
    assert steps == total


def test_the_branches_were_taken():
    """The problems above reach the branches they are there for (so the test above checks them)."""
    (rhs, jac, _), Y0, P, times, _ = blow_up()
    statuses = {integrate(rhs, jac, Y0[s], P[s], 0.0, times, 1e-8, 1e-10)[1] for s in range(len(Y0))}
    assert STATUS_OK in statuses and statuses & {STATUS_NONFINITE, STATUS_STEP_UNDERFLOW}
    (rhs, jac, _), Y0, P, times, options = few_steps_allowed()
    assert integrate(rhs, jac, Y0[0], P[0], 0.0, times, 1e-8, 1e-10, **options)[1] == STATUS_MAX_STEPS
    (rhs, jac, _), Y0, P, times, _ = robertson()
    Y, _, n_steps, n_rhs = integrate(rhs, jac, Y0[0], P[0], 0.0, times, 1e-8, 1e-10)
    assert n_rhs < 8 * n_steps          # 8 evaluations per accepted step, fewer per rejected one: rejections


def test_an_ensemble_of_none_and_bad_input():
    (rhs, jac, _), Y0, P, times, _ = outputs_at_t0()
    Y, status, steps = rosenbrock_lanes.integrate_many(rhs, jac, Y0[:0], P[:0], 0.0, times, 1e-8, 1e-10)
    assert Y.shape == (0, len(times), 1) and status.shape == (0,) and steps == 0
    with pytest.raises(ValueError, match="sorted"):
        rosenbrock_lanes.integrate_many(rhs, jac, Y0, P, 0.0, times[::-1], 1e-8, 1e-10)
    with pytest.raises(ValueError, match="inputs"):
        rosenbrock_lanes.integrate_many(rhs, jac, Y0, np.hstack([P, P]), 0.0, times, 1e-8, 1e-10)
    with pytest.raises(ValueError, match="equal N"):
        rosenbrock_lanes.integrate_many(rhs, jac, Y0, P[:2], 0.0, times, 1e-8, 1e-10)
    with pytest.raises(ValueError, match="lanes"):
        rosenbrock_lanes.integrate_many(rhs, jac, Y0, P, 0.0, times, 1e-8, 1e-10, lanes=0)
