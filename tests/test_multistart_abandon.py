"""The multi-start's stop rule for later starts (kinetics.fitting.local.CannotReach, passed to
least_squares_trf as ``stop``): a start that, at its rate of progress, cannot get below the
first start's optimum within its evaluation budget is abandoned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kinetics.fitting.local import LEAVING_BOUND, PROGRESS_WINDOW, CannotReach

BENCHMARK = Path("/work/shared/conformance/petab-benchmark")
_REPO_SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "conformance" / "petab-benchmark"
if _REPO_SHARED.is_dir():
    BENCHMARK = _REPO_SHARED


def _feed(rule, costs, max_nfev=1000):
    """Ask the rule before each of len(costs) evaluations; the evaluation count where it stops."""
    for nfev, cost in enumerate(costs, start=1):
        if rule(nfev, max_nfev, cost):
            return nfev
    return None


def test_a_crawl_far_above_the_reference_is_abandoned_after_the_warm_up():
    # cost falls by 0.01 per evaluation from 100: 1000 evaluations could take it to 90 at most
    costs = 100 - 0.01 * np.arange(500)
    assert _feed(CannotReach(10.0, warm_up=50), costs) == 50
    # the same crawl could reach a reference of 95 within its budget: it goes on
    assert _feed(CannotReach(95.0, warm_up=50), costs) is None


def test_fast_progress_and_points_below_the_reference_go_on():
    # converging geometrically to 5, below the reference 10: never abandoned
    assert _feed(CannotReach(10.0, warm_up=5), 5 + 100 * 0.9 ** np.arange(200)) is None
    assert _feed(CannotReach(10.0, warm_up=5), np.full(100, 9.0)) is None     # below the reference
    # converging to 20, above it: abandoned only once the progress has slowed down
    costs = 20 + 100 * 0.8 ** np.arange(200)
    stopped = _feed(CannotReach(10.0, warm_up=5), costs)
    assert stopped is not None and stopped > PROGRESS_WINDOW
    assert costs[stopped - 1] - 20 < 0.01       # by then within 0.01 of where it converges
    # the first evaluation where cost - rate x remaining budget exceeds the reference
    W = PROGRESS_WINDOW
    expected = next(k for k in range(W + 1, 200)
                    if costs[k - 1] - (costs[k - 1 - W] - costs[k - 1]) / W * (1000 - k) > 10.0)
    assert stopped == expected


def _feed_points(rule, costs, points, max_nfev=1000):
    """As _feed, with the current point before each evaluation."""
    for nfev, (cost, x) in enumerate(zip(costs, points), start=1):
        if rule(nfev, max_nfev, cost, np.array([x, 0.5])):
            return nfev
    return None


def test_a_start_leaving_a_bound_is_not_abandoned_until_it_is_away():
    # a crawl 50 times above the reference (1e-3 per evaluation) while parameter 0 moves off
    # its upper bound 1, its distance growing by 1.2 per evaluation from 1e-4
    W = PROGRESS_WINDOW
    costs = 500 - 1e-3 * np.arange(300)
    distance = np.minimum(1e-4 * 1.2 ** np.arange(300), 0.4)     # away from the bound from 51 on
    points = 1 - distance
    bounds = dict(lower=np.zeros(2), upper=np.ones(2))
    stopped = _feed_points(CannotReach(10.0, warm_up=5, **bounds), costs, points)
    # the first evaluation where the distance did not grow LEAVING_BOUND-fold over the window
    grew = distance[W:] > LEAVING_BOUND * distance[:-W]
    assert stopped == W + 1 + int(np.argmin(grew)) > 51
    # the same crawl without bounds, or with the parameter still: abandoned after the window
    assert _feed(CannotReach(10.0, warm_up=5), costs) == W + 1
    assert _feed_points(CannotReach(10.0, warm_up=5, **bounds), costs, np.full(300, 1 - 1e-4)) == W + 1
    # a parameter approaching its bound (distance shrinking) does not hold the rule back
    assert _feed_points(CannotReach(10.0, warm_up=5, **bounds), costs, 1 - distance[::-1]) == W + 1
    # a parameter without bounds (infinite both sides) neither
    free = CannotReach(10.0, warm_up=5, lower=np.full(2, -np.inf), upper=np.full(2, np.inf))
    assert _feed_points(free, costs, points) == W + 1
    with pytest.raises(ValueError, match="both bounds"):
        CannotReach(10.0, warm_up=5, lower=np.zeros(2))


def test_trust_region_stop_ends_at_the_current_point():
    from kinetics.numerics.trust_region import least_squares_trf
    t = np.linspace(0, 4, 30)
    y = 3 * np.exp(-1.3 * t) + 0.05 * np.sin(7 * t)        # a residual the model cannot fit

    def fun_and_jac(p):
        e = np.exp(-p[1] * t)
        return p[0] * e - y, np.column_stack([e, -p[0] * t * e])
    full = least_squares_trf(fun_and_jac, np.array([0.5, 5.0]), np.array([0.0, 0.0]), np.array([10.0, 10.0]))
    seen = []

    def stop(nfev, max_nfev, cost, x):
        seen.append((nfev, max_nfev, cost, x.copy()))
        return nfev >= 3
    early = least_squares_trf(fun_and_jac, np.array([0.5, 5.0]), np.array([0.0, 0.0]), np.array([10.0, 10.0]),
                              stop=stop)
    assert early.status == -3 and not early.success and early.nfev == 3
    assert seen[0][1] == 200 and [s[0] for s in seen] == [1, 2, 3]
    # the current (accepted) point: its residuals, cost and gradient belong together
    r, J = fun_and_jac(early.x)
    np.testing.assert_allclose(early.fun, r, rtol=1e-14)
    assert early.cost == pytest.approx(0.5 * r @ r, rel=1e-14) == seen[-1][2]
    # the rule is asked with the current point: its cost is the one it is given
    np.testing.assert_array_equal(seen[-1][3], early.x)
    for _, _, cost, x in seen:
        r, _ = fun_and_jac(x)
        assert cost == pytest.approx(0.5 * r @ r, rel=1e-14)
    assert early.cost > full.cost and full.status > 0


@pytest.mark.skipif(not BENCHMARK.is_dir(), reason="the PEtab benchmark copy is not present")
def test_abandoning_keeps_the_best_start_and_saves_evaluations():
    """Boehm_JProteomeRes2014 (sigma residuals), 8 starts with and without the rule: the same
    best value from the same start, fewer evaluations, and abandoned starts never end below
    the first start."""
    from kinetics.fitting import local
    from kinetics.fitting.optimize import _multistart, latin_starts
    from kinetics.fitting.problem import load_petab
    name = "Boehm_JProteomeRes2014"
    problem = load_petab(BENCHMARK / name / f"{name}.yaml")
    starts = latin_starts(problem, 8, 0)
    runs = {}
    for abandon in (False, True):
        runs[abandon] = _multistart(problem, starts, None, "least_squares", True, None, False, None, "auto",
                                    local.SCREENING_TOLERANCE, abandon=abandon)
    plain, ruled = runs[False], runs[True]
    assert ruled[0]["rss"] == plain[0]["rss"]
    best = min(r["rss"] for r in plain)
    assert min(r["rss"] for r in ruled) == pytest.approx(best, abs=1e-9)
    abandoned = [r for r in ruled if r["message"].startswith("abandoned")]
    assert abandoned and all(r["rss"] > ruled[0]["rss"] for r in abandoned)
    assert sum(r["nfev"] for r in ruled) < 0.8 * sum(r["nfev"] for r in plain)


@pytest.mark.skipif(not BENCHMARK.is_dir(), reason="the PEtab benchmark copy is not present")
def test_a_start_that_reaches_the_best_after_leaving_a_bound_is_kept(monkeypatch):
    """Bruno_JExpBot2016, seed 0, start 6 (bench/abandon_study.py): it crawls 38 times above the
    first start's optimum from evaluation 20 to 40 while one rate leaves its upper bound, then
    falls to the best optimum. The rule keeps it; without the bound guard it is abandoned."""
    from kinetics.fitting import local
    from kinetics.fitting.optimize import _multistart, latin_starts
    from kinetics.fitting.problem import load_petab
    name = "Bruno_JExpBot2016"
    problem = load_petab(BENCHMARK / name / f"{name}.yaml")
    starts = latin_starts(problem, 20, 0)
    pair = [starts[0], starts[6]]

    def run():
        return _multistart(problem, pair, None, "least_squares", True, None, False, None, "auto",
                           local.SCREENING_TOLERANCE, abandon=True)
    first, sixth = run()
    assert not sixth["message"].startswith("abandoned")
    assert sixth["loglik"] == pytest.approx(first["loglik"], abs=1e-3)
    monkeypatch.setattr(local, "LEAVING_BOUND", np.inf)
    _, unguarded = run()
    assert unguarded["message"].startswith("abandoned") and unguarded["loglik"] < first["loglik"] - 100
