"""Profiles and MCMC chains as tasks on any concurrent.futures.Executor (issue 12): the same
intervals and samples as the serial run, and a problem pickled in one process is rebuilt once
in another and shared by every task that carries it."""

from __future__ import annotations

import concurrent.futures
import pickle

import numpy as np
import pytest

from kinetics import FitError
from kinetics.fitting.optimize import fit
from kinetics.fitting.problem import rebuild_stats

from fitting_helpers import multi_condition_problem

QUIET = dict(executor=None, progress=False)


def _profile_summary(result):
    return {n: (result.ci95[n], result.identifiable[n], result.profiles[n]["values"], result.profiles[n]["delta"],
                result.profiles[n]["lower_stop"], result.profiles[n]["upper_stop"]) for n in result.problem.free}


def _assert_same_profiles(a, b, rtol=1e-9):
    assert a.keys() == b.keys()
    for name in a:
        (ci_a, id_a, v_a, d_a, lo_a, up_a), (ci_b, id_b, v_b, d_b, lo_b, up_b) = a[name], b[name]
        assert (id_a, lo_a, up_a) == (id_b, lo_b, up_b), name
        for end_a, end_b in zip(ci_a, ci_b):
            assert (end_a is None) == (end_b is None), name
            if end_a is not None:
                assert end_a == pytest.approx(end_b, rel=rtol), name
        np.testing.assert_allclose(v_a, v_b, rtol=rtol, err_msg=name)
        np.testing.assert_allclose(d_a, d_b, rtol=rtol, atol=1e-9, err_msg=name)


def test_profiles_on_a_thread_pool_equal_the_serial_profiles():
    """compute_profiles never used the executor: one task per parameter and side now, and the
    walks are deterministic, so the intervals are the serial ones."""
    result = fit(multi_condition_problem(nonlinear=False), multistart=1, **QUIET)
    serial = _profile_summary(result)
    assert any(ci != (None, None) for ci, *_ in serial.values())
    submitted = []

    class CountingPool(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            submitted.append(args[0].name)
            return super().submit(fn, *args, **kwargs)

    with CountingPool(2) as pool:
        result.compute_profiles(executor=pool)
    assert sorted(submitted) == sorted(2 * result.problem.free)     # one task per parameter and side
    _assert_same_profiles(_profile_summary(result), serial)


def test_fit_passes_its_process_pool_to_the_profiles():
    problem = multi_condition_problem(nonlinear=False)
    serial = fit(problem, multistart=3, seed=2, **QUIET)
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        before = sum(s["builds"] for s in pool.map(_stats_after_a_pause, range(2)))
        pooled = fit(problem, multistart=3, seed=2, executor=pool, progress=False)
        after = sum(s["builds"] for s in pool.map(_stats_after_a_pause, range(2)))
    np.testing.assert_allclose(pooled.x, serial.x, rtol=1e-12)
    _assert_same_profiles(_profile_summary(pooled), _profile_summary(serial))
    # 2 starts and 2 * 7 profile sides ran in the 2 workers: each built the problem at most once
    assert after - before <= 2


def _stats_after_a_pause(_):
    import time
    time.sleep(0.2)     # so that both workers answer
    return rebuild_stats()


def test_mcmc_chains_on_a_pool_equal_the_serial_chains():
    pytest.importorskip("emcee")
    result = fit(multi_condition_problem(nonlinear=False), multistart=1, profiles=False, **QUIET)
    one = result.sample(steps=30, walkers=18, burn=10, seed=4)["samples"].copy()
    serial = result.sample(steps=30, walkers=18, burn=10, seed=4, chains=2)
    assert serial["chains"] == 2 and serial["samples"].shape == (2 * one.shape[0], one.shape[1])
    # chain 0 is the single-chain run of the same seed; chain 1 a different one
    np.testing.assert_array_equal(serial["samples"][: len(one)], one)
    assert not np.array_equal(serial["samples"][len(one):], one)
    serial_samples = serial["samples"].copy()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pooled = result.sample(steps=30, walkers=18, burn=10, seed=4, chains=2, executor=pool)
    np.testing.assert_array_equal(pooled["samples"], serial_samples)
    with pytest.raises(FitError, match=r"sample\(executor=\.\.\.\) got"):
        result.sample(steps=10, chains=2, executor="threads")


def test_a_problem_pickled_in_another_process_is_built_once_here():
    """Unpickling used to share the rebuilt problem only in multiprocessing children; a dask
    worker need not be one (`dask worker --no-nanny`, or any process that reads a pickle written
    elsewhere) and rebuilt the problem for every task."""
    problem = multi_condition_problem(nonlinear=False)
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        written_elsewhere = pool.submit(pickle.dumps, problem).result()
    before = rebuild_stats()
    one, two = pickle.loads(written_elsewhere), pickle.loads(written_elsewhere)
    after = rebuild_stats()
    assert one is two and one is not problem
    # built here at most once (not at all if an earlier read cached it), then shared
    assert after["builds"] - before["builds"] <= 1
    assert after["builds"] - before["builds"] + after["reused"] - before["reused"] == 2
    x = problem.start() + 0.1
    r0, J0 = problem.residuals_and_jacobian(x)
    r1, J1 = one.residuals_and_jacobian(x)
    np.testing.assert_array_equal(r0, r1)
    np.testing.assert_array_equal(J0, J1)


def test_a_problem_read_back_where_it_was_pickled_is_a_clone_not_a_rebuild():
    """A dask scheduler in the client's process (LocalCluster) reads every task's pickle: each
    read rebuilt the problem (sympy, compilation: ~0.1 s), 169 times for a 40-start fit with
    profiles, which made the cluster 10x slower than the serial fit."""
    problem = multi_condition_problem(nonlinear=False)
    before = rebuild_stats()
    one, two = pickle.loads(pickle.dumps(problem)), pickle.loads(pickle.dumps(problem))
    after = rebuild_stats()
    assert after["builds"] == before["builds"] and after["cloned"] - before["cloned"] == 2
    # still problems of their own: own counters, own settings
    assert one is not two and one is not problem and one.recipe_key() == problem.recipe_key()
    x = problem.start() + 0.1
    n = problem.nfev
    np.testing.assert_array_equal(one.residuals(x), problem.residuals(x))
    assert problem.nfev == n + 1 and one.nfev == 1 and two.nfev == 0
    one.settings["multistart"] = 99
    assert problem.settings.get("multistart") != 99
