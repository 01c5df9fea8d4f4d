"""The batched exact affine solutions (kinetics.numerics.linear_batch): the eigen kernels over many
sets (real and complex spectra) and the matrix-exponential fallback, each against the
single-simulation path (kinetics.numerics.linear.solve_affine) to the last bit, and the fallback
against scipy's expm."""

import numpy as np
import pytest
from scipy.linalg import expm

pytest.importorskip("numba")

from kinetics.numerics.linear import MAX_EIGEN_CONDITION, solve_affine  # noqa: E402
from kinetics.numerics.linear_batch import solve_sets, solve_sets_expm  # noqa: E402


def chain(n, k_back=0.1):
    """The non-normal chain of PEERS.md: forward rates linspace(0.5, 2, n), back rates 0.1,
    outflow from the last compartment; eigenvectors ill-conditioned beyond n ~ 10."""
    k = np.linspace(0.5, 2.0, n)
    A = np.zeros((n, n))
    for i in range(n):
        A[i, i] -= k[i]
        if i + 1 < n:
            A[i + 1, i] += k[i]
            A[i, i + 1] += k_back
            A[i + 1, i + 1] -= k_back
    b = np.zeros(n)
    b[0] = 1000.0
    return A, b


@pytest.mark.parametrize("taus", [np.logspace(-1, np.log10(48), 20), np.linspace(0, 20, 41)], ids=["log", "uniform"])
def test_expm_fallback_equals_the_single_simulation_path(taus):
    """Sets of the ill-conditioned chain (the eigen kernel declines every one): the single
    simulation's expm path to the last bit, and scipy's expm stepped by hand to rounding
    (relative to each state's largest value)."""
    rng = np.random.default_rng(5)
    n, N = 24, 6
    A0, b0 = chain(n)
    A = np.array([A0 * rng.uniform(0.8, 1.25) for _ in range(N)])
    b = np.array([b0 * rng.uniform(0.5, 2) for _ in range(N)])
    x0 = rng.uniform(0, 10, (N, n))
    X = np.empty((N, len(taus), n))
    ok = np.ones(N, dtype=bool)
    solve_sets(A, b, x0, taus, MAX_EIGEN_CONDITION, X, ok)
    assert not ok.any()                                      # the eigen path declines
    solve_sets_expm(A, b, x0, taus, X)
    for s in range(N):
        single, _, used = solve_affine(A[s], b[s], x0[s], taus, method="expm")
        assert used == "expm"
        np.testing.assert_array_equal(X[s], single)
        M = np.zeros((n + 1, n + 1))
        M[:n, :n], M[:n, n] = A[s], b[s]
        z, previous, ref = np.append(x0[s], 1.0), 0.0, []
        for tau in taus:
            z = expm(M * (tau - previous)) @ z
            ref.append(z[:n])
            previous = tau
        scale = np.abs(ref).max(axis=0)
        assert np.all(np.abs(X[s] - np.array(ref)) <= 1e-12 * scale), s


def test_expm_fallback_without_inflow_and_well_conditioned():
    """b = 0 (no balancing of the augmented column) and a well-conditioned matrix (against the
    eigen kernel)."""
    rng = np.random.default_rng(8)
    A = np.array([[[-1.0, 0.2, 0.0], [0.5, -2.0, 0.1], [0.0, 1.0, -0.3]]]) * rng.uniform(0.5, 2, (4, 1, 1))
    b = np.zeros((4, 3))
    b[2:] = rng.uniform(0, 5, (2, 3))
    x0 = rng.uniform(0, 1, (4, 3))
    taus = np.array([0.2, 1.0, 7.0])
    X_eig = np.empty((4, 3, 3))
    ok = np.zeros(4, dtype=bool)
    solve_sets(A, b, x0, taus, MAX_EIGEN_CONDITION, X_eig, ok)
    assert ok.all()
    X = np.empty((4, 3, 3))
    solve_sets_expm(A, b, x0, taus, X)
    np.testing.assert_allclose(X, X_eig, rtol=1e-12, atol=1e-14)


def test_real_and_complex_spectra_and_declined_sets_in_one_batch():
    """Sets of a real spectrum, of a complex one (a kernel of its own) and an ill-conditioned one
    (declined) in one call: each solved set equals the single-simulation eigen path to the last bit."""
    rng = np.random.default_rng(11)
    real = np.array([[-1.0, 0.0, 0.0], [1.0, -2.0, 0.0], [0.0, 0.5, -0.3]])
    rotation = np.array([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.0], [0.3, 0.0, -0.5]])
    defective = np.array([[-1.0, 0.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])   # one eigenvector
    A = np.array([real * rng.uniform(0.5, 2), rotation * rng.uniform(0.5, 2), defective, real, rotation])
    b = rng.uniform(0, 1, (5, 3))
    x0 = rng.uniform(0, 1, (5, 3))
    taus = np.array([0.3, 1.0, 4.0])
    X = np.full((5, 3, 3), -1.0)
    ok = np.zeros(5, dtype=bool)
    solve_sets(A, b, x0, taus, MAX_EIGEN_CONDITION, X, ok)
    np.testing.assert_array_equal(ok, [True, True, False, True, True])
    assert (X[2] == -1.0).all()                                  # declined: untouched
    for s in np.flatnonzero(ok):
        ref, _, used = solve_affine(A[s], b[s], x0[s], taus)
        assert used == "eigen"
        np.testing.assert_array_equal(X[s], ref)
