"""Fits on a real dask.distributed cluster (a LocalCluster with 2 worker processes, one fixture
for the session): the same estimates and intervals as the serial run, the problem built once per
worker, and ``kinetics fit CASE --dask ADDRESS`` with clear messages when it cannot run."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from kinetics.cli import main
from kinetics.fitting.optimize import fit
from kinetics.fitting.problem import load_fit_spec, rebuild_stats

from conftest import write_fit_case


def _worker_stats(client):
    return client.run(rebuild_stats)


def test_forty_start_fit_with_profiles_on_a_cluster_equals_the_serial_fit(dask_cluster, tmp_path):
    client, _ = dask_cluster
    problem = load_fit_spec(write_fit_case(tmp_path / "case"))
    serial = fit(problem, multistart=40, seed=3, executor=None, progress=False)
    before = _worker_stats(client)
    clustered = fit(problem, multistart=40, seed=3, executor=client.get_executor(), progress=False)
    after = _worker_stats(client)
    np.testing.assert_allclose(clustered.x, serial.x, rtol=1e-8)
    assert clustered.loglik == pytest.approx(serial.loglik, rel=1e-10)
    assert [r["rss"] for r in clustered.runs] == pytest.approx([r["rss"] for r in serial.runs], rel=1e-8)
    for name in problem.free:
        assert None not in serial.ci95[name]
        np.testing.assert_allclose(clustered.ci95[name], serial.ci95[name], rtol=1e-8)
        assert clustered.identifiable[name] is serial.identifiable[name] is True
    # 39 starts and 4 profile sides ran on the workers; each built the problem at most once
    builds = sum(after[w]["builds"] - before[w]["builds"] for w in after)
    tasks = sum(after[w]["reused"] - before[w]["reused"] for w in after) + builds
    assert builds <= len(after) == 2
    assert tasks >= 39 + 2 * len(problem.free)


def test_cli_fit_on_a_dask_scheduler(dask_cluster, tmp_path, capsys):
    client, address = dask_cluster
    case = write_fit_case(tmp_path / "case")
    before = _worker_stats(client)
    assert main(["fit", str(case), "--dask", address, "--out", str(tmp_path / "out"), "--multistart", "6",
                 "--no-progress"]) == 0
    after = _worker_stats(client)
    assert sum(after[w]["reused"] + after[w]["builds"] - before[w]["reused"] - before[w]["builds"]
               for w in after) >= 5 + 4          # starts and profile sides ran on the cluster
    written = json.loads((tmp_path / "out" / "result.json").read_text())
    serial = fit(load_fit_spec(case), multistart=6, executor=None, progress=False)
    assert written["parameters"]["k_el"]["value"] == pytest.approx(serial.values[0], rel=1e-8)
    assert written["parameters"]["k_el"]["ci95"] == pytest.approx(list(serial.ci95["k_el"]), rel=1e-8)


def test_cli_dask_scheduler_unreachable_is_one_paragraph(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("kinetics.cli.DASK_CONNECT_TIMEOUT", 1)
    case = write_fit_case(tmp_path / "case")
    assert main(["fit", str(case), "--dask", "tcp://127.0.0.1:9", "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "--dask tcp://127.0.0.1:9: cannot reach a dask scheduler" in err and "dask worker" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "result.json").exists()


def test_cli_dask_without_distributed_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)      # import distributed -> ImportError
    case = write_fit_case(tmp_path / "case")
    assert main(["fit", str(case), "--dask", "tcp://127.0.0.1:8786", "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "pip install 'kinetics[dask]'" in err and "Traceback" not in err
