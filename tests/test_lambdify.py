"""kinetics.codegen.lambdify: Jacobians of powers (finite where the base is 0)."""

import math

import numpy as np
import pytest
import sympy as sp

import kinetics
from kinetics.codegen.lambdify import lambdify, power_safe_derivatives, step_safe_jacobian
from kinetics.codegen.tape import Tape, jacobian_rows
from kinetics.model import Model

x, y, K, h = sp.symbols("x y K h")

#: d/dx (x/K)**h = h/K (x/K)**(h-1); at x = 0: 1/K for h = 1, 0 for h > 1
HILL_SLOPES_AT_ZERO = [(1.0, 1 / 2.0), (2.0, 0.0), (2.5, 0.0)]


def _evaluate(expr, values):
    return float(lambdify([list(values)], [expr])(list(values.values()))[0])


@pytest.mark.parametrize("exponent, slope_at_zero", HILL_SLOPES_AT_ZERO)
def test_power_derivative_is_finite_where_the_base_is_zero(exponent, slope_at_zero):
    # sympy's own d/dx x**h is h x**h / x: 0/0 at x = 0 (this is what failed)
    at_zero = {x: 0.0, K: 2.0, h: exponent}
    for f, closed_form in ((x ** h, exponent * 0.0 ** (exponent - 1)), ((x / K) ** h, slope_at_zero)):
        (entry,), = power_safe_derivatives([f], [x])
        assert _evaluate(entry, at_zero) == closed_form
        (tape_entry,), = jacobian_rows([f], [x], [x, K, h])
        assert Tape.from_exprs([tape_entry], [x, K, h]).evaluate(np.array([0.0, 2.0, exponent]))[0] == closed_form
    # away from 0 the same closed form h/K (x/K)**(h-1)
    (entry,), = power_safe_derivatives([(x / K) ** h], [x])
    assert math.isclose(_evaluate(entry, {x: 0.7, K: 2.0, h: exponent}), exponent / 2.0 * (0.7 / 2.0) ** (exponent - 1), rel_tol=1e-15)


def test_the_log_term_appears_only_where_the_exponent_depends_on_the_variable():
    (d_base, d_exponent), = power_safe_derivatives([x ** y], [x, y])
    assert not d_base.has(sp.log) and sp.simplify(d_base - y * x ** (y - 1)) == 0
    # d/dy x^y = x^y log(x), taken as its limit 0 at x = 0 (sympy's form is 0 * -inf there)
    assert math.isclose(_evaluate(d_exponent, {x: 0.5, y: 1.5}), 0.5 ** 1.5 * math.log(0.5), rel_tol=1e-15)
    assert _evaluate(d_exponent, {x: 0.0, y: 1.5}) == 0.0
    # a Hill function 1/(1 + (x/K)^h) inside a sum: the entries agree with sympy's away from 0
    f = sp.Matrix([1 / (1 + (x / K) ** h) + y ** 2, sp.floor(x) * y])
    J = step_safe_jacobian(f, [x, y])
    assert J[1, 0] == 0 and not J.has(sp.Derivative)
    point = {x: 0.3, y: 1.7, K: 2.0, h: 2.5}
    reference = sp.Matrix([f[0]]).jacobian([x, y]).subs(point)  # sympy's own, away from 0
    np.testing.assert_allclose(np.array(J[0, :].subs(point), dtype=float), np.array(reference, dtype=float), rtol=1e-14)


def _hill_from_zero(exponent):
    # dY/dt = 1, dX/dt = (Y/K)^h from Y = X = 0, K = 2: X = t^(h+1) / ((h+1) K^h)
    return Model.from_dict({
        "compartments": {"Y": {"initial": 0}, "X": {"initial": 0}},
        "parameters": {"K": 2.0, "h": exponent},
        "reactions": {"clock": {"products": "Y", "rate": "1"},
                      "hill": {"products": "X", "rate": "(Y / K)**h"}},
        "observables": {"activation": {"expr": "(Y / K)**h"}},
    })


@pytest.mark.parametrize("exponent", [1.0, 2.0, 2.5])
def test_a_hill_term_of_a_state_that_starts_at_zero_integrates(exponent):
    # the Jacobian entry dX'/dY was 0/0 at t = 0 and the integrator stopped with "not finite"
    t = np.linspace(0, 3, 7)
    sim = kinetics.simulate(_hill_from_zero(exponent), t, rtol=1e-10, atol=1e-12)
    assert sim.method == "numerical"
    np.testing.assert_allclose(sim["Y"], t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sim["X"], t ** (exponent + 1) / ((exponent + 1) * 2.0 ** exponent), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("exponent", [1.0, 2.5])
def test_sensitivities_of_a_hill_term_from_zero_match_the_closed_form(exponent):
    # d/dh (Y/K)^h = (Y/K)^h log(Y/K) was 0 * -inf at Y = 0 (in every direction: the sensitivity
    # system multiplies the whole parameter Jacobian by the directions); its limit there is 0.
    # X = t^(h+1) / ((h+1) K^h): dX/dK = -h X / K, dX/dh = X (ln t - ln K - 1/(h+1));
    # activation = (t/K)^h: d/dK = -h activation / K, d/dh = activation ln(t/K) (0 at t = 0)
    h_, K_ = exponent, 2.0
    t = np.linspace(0, 3, 7)
    sim = kinetics.simulate(_hill_from_zero(exponent), t, sensitivities=["K", "h"], rtol=1e-10, atol=1e-12)
    X = t ** (h_ + 1) / ((h_ + 1) * K_ ** h_)
    activation = (t / K_) ** h_
    with np.errstate(divide="ignore", invalid="ignore"):
        dX_dh = np.where(t > 0, X * (np.log(t) - np.log(K_) - 1 / (h_ + 1)), 0.0)
        dact_dh = np.where(t > 0, activation * np.log(t / K_), 0.0)
    np.testing.assert_allclose(sim.sensitivity("X", "K"), -h_ * X / K_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sim.sensitivity("X", "h"), dX_dh, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sim.sensitivity("activation", "K"), -h_ * activation / K_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sim.sensitivity("activation", "h"), dact_dh, rtol=1e-6, atol=1e-9)
