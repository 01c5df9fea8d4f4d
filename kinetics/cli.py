"""The ``kinetics`` command line: thin wrappers over the library for the common jobs.

Every failure the user can cause exits non-zero with a one-paragraph message (the full
traceback only with ``--debug``)."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np

from .errors import KineticsError, KineticsWarning

__all__ = ["main"]

FIGURE_DPI = 300            # every --plot and fit figure: journals ask for 300 dpi
MAX_POINTS = 10**6          # simulate --points: the table is held in memory several times over
MAX_DRAWS = 10**6           # --samples, --mcmc
DASK_CONNECT_TIMEOUT = 10   # seconds to reach the --dask scheduler
QUOTED_LIMIT = 200          # quoted text longer than this is shortened in messages
MESSAGE_LIMIT = 4000        # and a whole message longer than this

# C0/C1 control characters (except newline and tab) and the bidirectional overrides that can
# rewrite what a terminal shows
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LONG_QUOTED = re.compile("'([^'\n]{%d,})'" % (QUOTED_LIMIT + 1))


def clean_text(text, limit=None) -> str:
    """``text`` safe for a terminal: control characters escaped (\\x1b, \\u202e, ...), quoted
    text longer than QUOTED_LIMIT shortened, and the whole cut at ``limit`` characters."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    text = _LONG_QUOTED.sub(lambda m: f"'{m.group(1)[:QUOTED_LIMIT // 2]}...' ({len(m.group(1))} characters)", text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    return text


def _say(text="", file=None):
    print(clean_text(text), file=file or sys.stdout)


def _error(text):
    """One paragraph on stderr."""
    print("error: " + clean_text(" ".join(str(text).split("\n\n")), MESSAGE_LIMIT), file=sys.stderr)


def _count(option, value, minimum, maximum=None):
    """An integer option within [minimum, maximum] (None passes through)."""
    if value is None:
        return None
    if value < minimum:
        raise KineticsError(f"{option} {value}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise KineticsError(f"{option} {value}: at most {maximum:,} is supported (memory and time grow with it)")
    return value


def _integer(text):
    """argparse type: a whole number, also written as 2e3."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number")
    return int(value)


def _tolerance(option, value):
    if not (math.isfinite(value) and 0 < value < 1):
        raise KineticsError(f"{option} {value:g}: must be a positive number below 1, e.g. {option} 1e-8")
    return value


def _plot_format(path):
    """The image format of ``--plot PATH`` from its extension (default png), checked before any work."""
    from matplotlib.figure import Figure
    supported = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    if suffix not in supported:
        raise KineticsError(f"--plot {path}: unsupported image type '.{suffix}'; use one of "
                            + ", ".join("." + s for s in sorted(supported)))
    return suffix


def _check_out_folder(folder, option="--out"):
    from .io.files import check_output_folder
    return check_output_folder(folder, what=f"{option} {folder}")


def _parse_assignments(items, what="--set"):
    out = {}
    for item in items or ():
        if "=" not in item:
            raise KineticsError(f"{what} '{item}': expected name=value, e.g. {what} k_sec=0.4")
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise KineticsError(f"{what} '{item}': '{value}' is not a number") from None
    return out


#: the one --dose grammar of every command (simulate, pk, and any command taking doses)
DOSE_GRAMMAR = ("COMPARTMENT=AMOUNT[@TIME]: a bolus of AMOUNT (in the compartment's unit) into COMPARTMENT at "
                "TIME (the model's time unit; default 0), e.g. --dose plasma=1e10 or --dose P=500@12")


def _parse_doses(items, option="--dose"):
    """COMPARTMENT=AMOUNT[@TIME] bolus doses (DOSE_GRAMMAR)."""
    doses = []
    for item in items or ():
        name, sep, rest = item.partition("=")
        amount, _, when = rest.partition("@")
        try:
            doses.append({"compartment": name.strip(), "amount": float(amount), "time": float(when) if when else 0.0})
        except ValueError:
            raise KineticsError(f"{option} '{item}': expected {DOSE_GRAMMAR}") from None
        if not sep or not name.strip():
            raise KineticsError(f"{option} '{item}': expected {DOSE_GRAMMAR}")
        bad = [what for what in ("amount", "time") if not math.isfinite(doses[-1][what])]
        if bad:
            raise KineticsError(f"{option} '{item}': the {' and '.join(bad)} must be finite numbers, "
                                f"e.g. {option} P=1e10@0")
    return doses


def _load(name_or_path):
    from .model.library import resolve_model_path
    from .model.core import load_model
    return load_model(resolve_model_path(name_or_path))


def cmd_models(args):
    from .model.library import bundled_models, models_dir
    library = bundled_models()
    if getattr(args, "json", False):
        import json
        _say(json.dumps({name: {k: str(v) for k, v in info.items()} for name, info in library.items()}, indent=2))
        return 0
    if not library:
        _say(f"no bundled models found in {models_dir()}")
        return 0
    width = max(len(n) for n in library)
    for name, info in library.items():
        text = info["description"].split(". ")[0].rstrip(".")
        _say(f"{name:<{width}}  {text[:100] + '...' if len(text) > 100 else text}")
    _say(f"\n({len(library)} models in {models_dir()}; use a name or a path with 'kinetics simulate')")
    return 0


def cmd_simulate(args):
    from .simulation.schedule import simulate
    if args.points < 2:
        raise KineticsError("--points must be at least 2")
    _count("--points", args.points, 2, MAX_POINTS)
    if not (args.t_end > 0 and math.isfinite(args.t_end)):
        raise KineticsError("--t-end must be positive")
    _tolerance("--rtol", args.rtol)
    _tolerance("--atol", args.atol)
    plot_format = _plot_format(args.plot) if args.plot else None
    model = _load(args.model)
    values = _parse_assignments(args.set)
    times = np.linspace(0.0, args.t_end, args.points)
    sim = simulate(model, times, parameters=values, doses=_parse_doses(args.dose), rtol=args.rtol, atol=args.atol)
    if args.out:
        sim.to_csv(args.out)
        _say(f"wrote {args.out} ({len(times)} times x {len(sim.names)} series, method: {sim.method})")
    if args.plot:
        _save_simulation_plot(sim, sim.names if args.all else None, args.logy, args.plot, plot_format)
        _say(f"wrote {args.plot}")
    if args.json:
        import json
        records = sim.wide.to_dict(orient="records")
        _say(json.dumps({"model": sim.model_name, "method": sim.method, "time_unit": sim.time_unit,
                         "units": {name: sim.unit(name) for name in sim.names},
                         "records": records}, indent=2, default=float, allow_nan=False))
    elif not args.out and not args.plot:
        import pandas as pd
        with pd.option_context("display.max_rows", 30, "display.width", 160):
            _say(sim.wide.to_string(index=False, max_rows=30, float_format=lambda v: f"{v:.6g}"))
    return 0


def _save_figure(fig, path, image_format, dpi):
    """Save a detached Figure atomically (matplotlib's backend and pyplot state untouched)."""
    from .io.files import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=image_format)


def _save_plot(draw, path, image_format):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7.5, 4.8))
    draw(fig.subplots())
    fig.tight_layout()
    _save_figure(fig, path, image_format, dpi=FIGURE_DPI)


def _save_simulation_plot(sim, names, logy, path, image_format):
    """One panel per unit (a concentration and a percentage on one axis would squash one of
    them), stacked, sharing the time axis."""
    from matplotlib.figure import Figure
    names = names or sim.observable_names or sim.state_names
    groups = {}
    for name in names:
        groups.setdefault(sim.unit(name), []).append(name)
    fig = Figure(figsize=(7.5, 3.2 * len(groups) + 1.0 if len(groups) > 1 else 4.8))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for axis, group in zip(axes, groups.values()):
        sim.plot(ax=axis, names=group, logy=logy)
    for axis in axes[1:]:
        axis.set_title("")
    for axis in axes[:-1]:
        axis.set_xlabel("")
    fig.tight_layout()
    _save_figure(fig, path, image_format, dpi=FIGURE_DPI)


def _dask_client(address):
    """A dask.distributed Client of the scheduler at ``address`` (--dask), or KineticsError."""
    try:
        from distributed import Client
    except ImportError:
        raise KineticsError(f"--dask {address}: running on a dask cluster needs dask.distributed; install it with "
                            "pip install 'kinetics[dask]' (or pip install 'dask[distributed]'), or drop --dask to "
                            "fit on this machine") from None
    try:
        return Client(address, timeout=DASK_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise KineticsError(f"--dask {address}: cannot reach a dask scheduler there within {DASK_CONNECT_TIMEOUT} s "
                            f"({type(exc).__name__}: {exc}). Start one with `dask scheduler` (it prints its address, "
                            "e.g. tcp://HOST:8786), start workers with `dask worker tcp://HOST:8786`, and pass that "
                            "address.") from None


def cmd_fit(args):
    from .fitting.optimize import fit
    from .fitting.problem import load_fit_spec
    folder = Path(args.case)
    from .fitting.problem import MAX_MULTISTART    # one limit for the API, fit specs and the CLI
    _count("--multistart", args.multistart, 1, MAX_MULTISTART)
    _count("--seed", args.seed, 0)
    _count("--mcmc", args.mcmc, 1, MAX_DRAWS)
    out = Path(args.out) if args.out else (folder if folder.is_dir() else folder.parent) / "results"
    problem = load_fit_spec(folder)
    _check_out_folder(out, "--out" if args.out else "the output folder (--out)")   # before the fit, not after
    formats = _figure_formats(args.figure_format)
    if args.dask and args.serial:
        raise KineticsError("--dask and --serial exclude each other: --dask runs the starts and profiles on a "
                            "dask cluster, --serial in this process; give one of them")
    client = _dask_client(args.dask) if args.dask else None
    _say(f"fitting {problem.model.name} to {problem.data.n_points} points "
         f"({', '.join(problem.condition_names)}; noise {problem.noise}; free: {', '.join(problem.free)})",
         file=sys.stderr if args.json else None)
    try:
        executor = client.get_executor() if client is not None else (None if args.serial else "auto")
        result = fit(problem, multistart=args.multistart, seed=args.seed, method=args.method,
                     executor=executor, progress=not args.no_progress,
                     profiles=not args.no_profiles, mcmc={"steps": args.mcmc} if args.mcmc else None,
                     engine=args.engine)
    finally:
        if client is not None:
            client.close()
    written = result.save(out, formats=formats)
    if args.json:   # the result.json content on stdout; the folder is written as usual
        _say(result.to_json())
        _say(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
        return 0
    _say(result.fit_report())
    _say(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0


def _figure_formats(items):
    """--figure-format values (repeatable, or comma-separated): png always, svg/pdf on request."""
    from .report.plots import FIGURE_FORMATS
    formats = ["png"]
    for item in items or ():
        for value in item.split(","):
            value = value.strip().lower().lstrip(".")
            if value not in FIGURE_FORMATS:
                raise KineticsError(f"--figure-format '{value}': use one of {', '.join(FIGURE_FORMATS)} "
                                    "(PNG is always written; e.g. --figure-format svg)")
            if value not in formats:
                formats.append(value)
    return tuple(formats)


def cmd_compare(args):
    from .analysis.compare import compare
    nested = {}
    for item in args.nested or ():
        small, sep, big = item.partition("<")
        if not sep:
            raise KineticsError(f"--nested '{item}': expected SMALL<LARGE (folder names)")
        nested[small.strip()] = big.strip()
    plot_format = _plot_format(args.plot) if args.plot else None
    labels = [Path(d).resolve().name if Path(d).is_dir() else Path(d).resolve().parent.name for d in args.dirs]
    if len(set(labels)) != len(labels):
        labels = [str(Path(d)) for d in args.dirs]
    comparison = compare(args.dirs, labels=labels, nested=nested)
    if args.json:
        import json
        _say(json.dumps(comparison.to_dict(), indent=2, default=float))
    else:
        _say(comparison.report())
    if args.plot:
        from matplotlib.figure import Figure
        base = Path(args.plot)
        for suffix, fig in (("", comparison.plot_fits(figure=Figure())), ("_weights", comparison.plot_weights(figure=Figure()))):
            if fig is None:
                continue
            target = base.with_name(base.stem + suffix + (base.suffix or ".png"))
            _save_figure(fig, target, plot_format, dpi=FIGURE_DPI)
            _say(f"wrote {target}")
    return 0


def cmd_steady(args):
    import json

    import pandas as pd

    from .analysis.steady import compare_scenarios, steady_state
    _count("--samples", args.samples, 0, MAX_DRAWS)
    plot_format = _plot_format(args.plot) if args.plot else None
    _check_condition_option(args)
    model = _load(args.model)
    overrides = _parse_assignments(args.set)
    values = _fit_values(args.fit, model, args.condition) if args.fit else {}
    values.update(overrides)
    scale = _parse_assignments(args.scale, "--scale")
    baseline = steady_state(model, values or None)
    out = baseline.to_dict()
    table = uncertainty = None
    if scale:
        table = compare_scenarios(model, values or None, {"scenario": {"scale": scale}})
        out["scenario"] = steady_state(model, values or None, scale=scale).to_dict()
    if args.fit:
        from .analysis.uncertainty import steady_state_uncertainty
        uncertainty = steady_state_uncertainty(model, _fit_summary_at(args.fit, overrides), n_samples=args.samples,
                                               condition=args.condition)
        out["uncertainty"] = uncertainty.to_dict(orient="records")
    if args.condition:
        out["condition"] = args.condition
    if args.plot:
        from .report.plots import plot_steady
        from matplotlib.figure import Figure
        figure = plot_steady(baseline, model, figure=Figure())
        if figure is None:
            raise KineticsError(f"--plot {args.plot}: model '{model.name}' has no flows, so there is no flux to plot")
        _save_figure(figure, args.plot, plot_format, dpi=FIGURE_DPI)
        _say(f"wrote {args.plot}", file=sys.stderr if args.json else None)
    if args.json:
        _say(json.dumps(out, indent=2, default=float))
        return 0
    _say(baseline.report())
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        if table is not None:
            _say("\n[[What-if: " + ", ".join(f"{k} x {v:g}" for k, v in scale.items()) + "]]")
            _say(table.to_string(float_format=lambda v: f"{v:.5g}"))
        if uncertainty is not None:
            _say(f"\n[[95 % intervals from the fit in {args.fit}]]{_held_text(overrides)} (delta method on the log "
                 f"scale; sampling: {args.samples} parameter draws)")
            _say(uncertainty.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    return 0


def cmd_pk(args):
    import json

    import pandas as pd

    from .analysis.pk import pk_summary
    _count("--samples", args.samples, 0, MAX_DRAWS)
    plot_format = _plot_format(args.plot) if args.plot else None
    _check_condition_option(args)
    model = _load(args.model)
    doses = _parse_doses([args.dose])
    if doses[0]["time"] != 0:
        raise KineticsError(f"--dose '{args.dose}': pk summarises a bolus at time 0; write --dose "
                            f"{doses[0]['compartment']}={doses[0]['amount']:g} (or @0)")
    dose = {"compartment": doses[0]["compartment"], "amount": doses[0]["amount"]}
    overrides = _parse_assignments(args.set)
    values = _fit_values(args.fit, model, args.condition) if args.fit else {}
    values.update(overrides)
    summary = pk_summary(model, dose, args.observable, values or None, t_last=args.t_last)
    out = summary.to_dict()
    uncertainty = None
    if args.fit:
        from .analysis.uncertainty import pk_uncertainty
        uncertainty = pk_uncertainty(model, _fit_summary_at(args.fit, overrides), dose, args.observable,
                                     n_samples=args.samples, t_last=args.t_last, condition=args.condition)
        out["uncertainty"] = uncertainty.to_dict(orient="records")
    if args.condition:
        out["condition"] = args.condition
    if args.plot:
        from .report.plots import plot_pk
        from matplotlib.figure import Figure
        _save_figure(plot_pk(summary, model, figure=Figure()), args.plot, plot_format, dpi=FIGURE_DPI)
        _say(f"wrote {args.plot}", file=sys.stderr if args.json else None)
    if args.json:
        _say(json.dumps(out, indent=2, default=float))
        return 0
    _say(summary.report())
    if uncertainty is not None:
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            _say(f"\n[[95 % intervals from the fit in {args.fit}]]{_held_text(overrides)}")
            _say(uncertainty.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    return 0


def _fit_summary_at(folder, overrides):
    """The saved fit's summary for intervals at the ``--set`` values: parameters set there are
    held at those values (no uncertainty); the other free parameters keep their fitted values
    and their covariance (the marginal block; MCMC samples: their columns)."""
    from .analysis.uncertainty import FitSummary, load_fit_summary
    summary = load_fit_summary(folder)
    if not overrides:
        return summary
    keep = [i for i, name in enumerate(summary.free) if name not in overrides]
    samples = summary.samples[:, keep] if summary.samples is not None else None
    return FitSummary(summary.model_name, {**summary.values, **overrides}, [summary.free[i] for i in keep],
                      summary.covariance[np.ix_(keep, keep)], summary.log_scale[keep], samples,
                      conditions=summary.conditions, overrides=summary.overrides, origin=summary.origin)


def _check_condition_option(args):
    if args.condition and not args.fit:
        raise KineticsError(f"--condition {args.condition}: selects a condition of a saved fit, so it needs "
                            "--fit DIR as well (e.g. --fit results/culture --condition rab27a_kd)")


def _held_text(overrides):
    if not overrides:
        return ""
    return " at " + ", ".join(f"{k} = {v:g}" for k, v in overrides.items()) + " (held fixed; the other parameters vary)"


def _fit_values(folder, model, condition=None):
    """Best-fit values of a saved fit (result.json) for the model's parameters (in
    ``condition``, its overrides applied, when given)."""
    from .io.results import read_result
    path, data = read_result(folder)
    if data["model"].get("name") != model.name:
        raise KineticsError(f"{path}: this fit is of model '{data['model'].get('name')}', not '{model.name}'")
    values = {name: entry["value"] for name, entry in data["parameters"].items()}
    if condition is not None:
        from .analysis.uncertainty import condition_values, load_fit_summary
        values = condition_values(load_fit_summary(folder), values, condition)
    return {name: value for name, value in values.items() if name in model.parameters}


def cmd_export(args):
    from .io.sbml import write_sbml
    source = Path(args.model)
    if args.format == "petab":
        return _export_petab(source, Path(args.out))
    if source.is_dir() and (source / "fit.toml").exists():  # a fit case: its model
        from .problem import load_fit_spec
        model = load_fit_spec(source / "fit.toml").model
    else:
        model = _load(args.model)
    write_sbml(model, args.out)
    print(f"wrote {args.out} (SBML Level 3 version 2, model '{model.name}')")
    return 0


def _export_petab(source, out):
    """``kinetics export petab CASE_OR_FIT --out DIR``: a fit case (folder or fit.toml) at its
    start values, or a finished fit (a folder with result.json beside or inside the case) at
    its estimates."""
    from .fitting.problem import load_fit_spec
    from .io.petab import write_petab
    values = None
    spec = source
    if source.is_dir() and (source / "result.json").exists():
        result = json.loads((source / "result.json").read_text())
        values = {name: entry["value"] for name, entry in result["parameters"].items()}
        values.update({k: v for k, v in result.get("noise", {}).items() if k != "model"})
        candidates = [source / "fit.toml", source.parent / "fit.toml"]
        spec = next((c for c in candidates if c.exists()), None)
        if spec is None:
            raise KineticsError(f"{source}: a finished fit needs its fit spec beside it or in the folder above "
                                "(fit.toml); export the case folder instead")
    problem = load_fit_spec(spec)
    _check_out_folder(out, "--out")
    path = write_petab(problem, out, values)
    print(f"wrote {path} (PEtab v1: model.xml, conditions, measurements, observables, parameters)")
    return 0


def cmd_petab(args):
    from .fitting.problem import load_petab
    from .io.petab import evaluate
    problem = load_petab(args.problem)
    result = evaluate(problem)
    result.pop("simulations", None)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.problem}: at the nominal parameters\n  log-likelihood  {result['llh']:.10g}\n"
              f"  chi2            {result['chi2']:.10g}\n  measurements    {result['n_measurements']}")
    return 0


def cmd_demo(args):
    from . import demo
    _check_out_folder(args.out)
    return demo.run(Path(args.out))


def _fit_case(fit_dir, case):
    """The fit case (folder with fit.toml) of a saved fit: --case, else the fit folder itself or its parent."""
    if case:
        return Path(case)
    folder = Path(fit_dir)
    for candidate in (folder, folder.parent):
        if (candidate / "fit.toml").is_file():
            return candidate
    raise KineticsError(f"--fit {fit_dir}: no fit.toml in this folder or its parent, so the conditions (doses, "
                        "overrides) of the fit are unknown; give the case folder with --case CASE")


def cmd_predict(args):
    from .analysis.uncertainty import load_fit_summary
    from .fitting.predictive import ensemble_from_draws, parameter_draws
    from .fitting.problem import load_fit_spec
    from .io.results import read_result
    _count("--samples", args.samples, 2, MAX_DRAWS)
    _count("--seed", args.seed, 0)
    plot_format = _plot_format(args.plot) if args.plot else None
    path, data = read_result(args.fit)
    problem = load_fit_spec(_fit_case(args.fit, args.case))
    if data["model"]["name"] != problem.model.name:
        raise KineticsError(f"{path}: the fit is of model '{data['model']['name']}', but the case's fit.toml uses "
                            f"'{problem.model.name}'; give the matching case with --case")
    summary = load_fit_summary(args.fit)
    if list(summary.free) != list(problem.free):
        raise KineticsError(f"{path}: the fit's free parameters ({', '.join(summary.free)}) differ from the case's "
                            f"({', '.join(problem.free)}); give the matching case with --case")
    best = np.array([summary.values[name] for name in problem.free])
    jac = np.where(problem.log_mask, best * math.log(10.0), 1.0)     # d natural / d internal
    x = problem.to_internal(best)
    draws = parameter_draws(problem, x, summary.covariance / np.outer(jac, jac), None, args.samples, "covariance",
                            args.seed)
    conditions = [args.condition] if args.condition else problem.condition_names
    noise = data.get("noise", {})
    frames, ensembles = [], []
    for condition in conditions:
        if args.times:
            times = np.array(sorted(_parse_numbers(args.times, "--times")))
        else:
            t_data = problem.data.for_condition(condition)["time"].to_numpy(float) if condition in problem.condition_names else [1.0]
            times = np.linspace(0.0, float(np.max(t_data)), args.points)
        ensemble = ensemble_from_draws(problem, draws, times, condition, noise.get("model") if not args.no_noise else None,
                                       noise, not args.no_noise, args.seed)
        ensembles.append(ensemble)
        table = ensemble.quantiles([0.025, 0.5, 0.975], problem.data.observables)
        wide = table.pivot_table(index=["name", "time"], columns="quantile", values="value", sort=False).reset_index()
        wide.columns = ["name", "time", "lower", "median", "upper"]
        wide.insert(0, "condition", condition)
        frames.append(wide)
    import pandas as pd
    bands = pd.concat(frames, ignore_index=True)
    what = ("parameter uncertainty (covariance draws)" + ("" if args.no_noise else f" and {noise.get('model')} measurement noise"))
    if args.out:
        from .io.files import atomic_path
        with atomic_path(args.out) as tmp:
            bands.to_csv(tmp, index=False, float_format="%.10g")
        _say(f"wrote {args.out} (95 % bands: {what}; {args.samples} draws, "
             f"{sum(int(e.failed.sum()) for e in ensembles)} failed)")
    if args.plot:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(7.5, 3.6 * len(ensembles)))
        axes = fig.subplots(len(ensembles), 1, squeeze=False)[:, 0]
        for ax, condition, ensemble in zip(axes, conditions, ensembles):
            ensemble.plot(names=problem.data.observables, ax=ax, logy=args.logy)
            rows = problem.data.for_condition(condition)
            for name in problem.data.observables:
                measured = rows[rows["observable"] == name]
                ax.plot(measured["time"], measured["value"], "o", ms=3, color="k")
            ax.set_title(f"{condition}: median and 95 % band ({'parameters' if args.no_noise else 'parameters and noise'}, "
                         f"{args.samples} draws)", fontsize="small")
        fig.tight_layout()
        _save_figure(fig, args.plot, plot_format, dpi=120)
        _say(f"wrote {args.plot}")
    if not args.out and not args.plot:
        _say(bands.to_string(index=False, max_rows=40, float_format=lambda v: f"{v:.5g}"))
    return 0


def _parse_numbers(text, option):
    try:
        values = [float(v) for v in str(text).replace(",", " ").split()]
    except ValueError:
        raise KineticsError(f"{option} '{text}': expected numbers separated by commas, e.g. {option} 0,1,2,4") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise KineticsError(f"{option} '{text}': expected finite times >= 0, e.g. {option} 0,1,2,4")
    return values


def _add_prediction_options(p):
    """Options shared by the commands that predict from a model (steady, pk)."""
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="set a parameter (repeatable)")
    p.add_argument("--fit", metavar="DIR", help="use the best-fit values of a saved fit, with 95 %% intervals")
    p.add_argument("--samples", type=_integer, default=300, help="parameter draws for the sampled intervals (default 300)")
    p.add_argument("--condition", metavar="NAME", help="with --fit: predict for this condition of a multi-condition fit "
                   "(its parameter overrides applied; default: the fitted parameter values as they are)")
    p.add_argument("--plot", metavar="PATH", help="write a figure to this image file (.png at 300 dpi, .svg, .pdf)")
    p.add_argument("--json", action="store_true", help="print JSON")


#: the examples at the end of each command's --help
EXAMPLES = {
    "kinetics": """examples:
  kinetics models
  kinetics simulate lifecycle --t-end 48 --points 97 --out lifecycle.csv --plot lifecycle.png
  kinetics fit fits/plasma_clearance_2c --out results/pk2
  kinetics steady exo_linear --json
  kinetics pk circulation_2c --dose plasma=1e10 --observable plasma_conc --fit results/pk2

""" + textwrap.fill("Doses, in every command: " + DOSE_GRAMMAR + ".", 90) + """
Add --debug (before or after the command) for the full traceback of an error.
Documentation: docs/cli.md (every command and option) and docs/index.md.""",
    "models": """examples:
  kinetics models
  kinetics models --json""",
    "simulate": """examples:
  kinetics simulate lifecycle --t-end 48 --points 97 --out lifecycle.csv --plot lifecycle.png
  kinetics simulate models/exo_sat.toml --set Vmax=200 --dose P=500@0
  kinetics simulate circulation_2c --dose plasma=1e10 --t-end 24 --logy --plot plasma.svg
  kinetics simulate exo_linear --points 5 --json

""" + textwrap.fill("--dose " + DOSE_GRAMMAR + ".", 90) + """
Without --out/--plot the table is printed (--json: one record per time).""",
    "fit": """examples:
  kinetics fit fits/plasma_clearance_2c --out results/pk2
  kinetics fit fits/culture_rab27a --multistart 20 --seed 3 --figure-format svg
  kinetics fit fits/plasma_clearance_1c --no-profiles --json > pk1.json

Writes result.json, report.txt, report.html (one page: estimates, intervals, figures,
warnings), fit.png, residuals.png, profiles.png (300 dpi; also .svg/.pdf with
--figure-format), curves.csv and, with --mcmc, corner.png.""",
    "compare": """examples:
  kinetics compare results/pk1 results/pk2
  kinetics compare results/pk1 results/pk2 --nested pk1<pk2 --plot comparison.png
  kinetics compare results/pk1 results/pk2 --json""",
    "steady": """examples:
  kinetics steady exo_linear
  kinetics steady exo_sat --scale k_sec=2 --plot fluxes.png
  kinetics steady culture --fit fits/culture_rab27a/results --condition rab27a_kd --json""",
    "pk": """examples:
  kinetics pk circulation_2c --dose plasma=1e10 --observable plasma_conc
  kinetics pk circulation_2c --dose plasma=1e10 --observable plasma_conc --fit results/pk2 --plot pk.png

""" + textwrap.fill("--dose " + DOSE_GRAMMAR + "; pk summarises a bolus at time 0.", 90),
    "export": """examples:
  kinetics export sbml lifecycle --out lifecycle.xml
  kinetics export sbml fits/culture_rab27a --out culture.xml""",
    "demo": """examples:
  kinetics demo
  kinetics demo --out /tmp/demo""",
}


def build_parser():
    from . import __version__
    parser = argparse.ArgumentParser(prog="kinetics", description="Compartment kinetics of exosome production and clearance: "
                                     "simulate models, fit them to time courses, compare variants, predict steady states "
                                     "and PK figures.", epilog=EXAMPLES["kinetics"],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kinetics {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    # --debug also after the subcommand; SUPPRESS keeps a subcommand without it from resetting it
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser = sub.add_parser

    def add_command(name, **kwargs):
        # every command: --debug, a description (its help line unless given) and examples
        kwargs.setdefault("description", kwargs.get("help", "").rstrip(".").capitalize() + ".")
        return add_parser(name, parents=[common], epilog=EXAMPLES.get(name),
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    sub.add_parser = add_command

    p = sub.add_parser("models", help="list bundled models")
    p.add_argument("--json", action="store_true", help="print JSON (name -> description and path)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("simulate", help="simulate a model file or bundled model")
    p.add_argument("model", help="model file (.toml, or SBML .xml) or bundled model name")
    p.add_argument("--t-end", type=float, default=48.0, help="end time, in the model's time unit (default 48)")
    p.add_argument("--points", type=_integer, default=101, help="number of output times (default 101)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a parameter value (repeatable)")
    p.add_argument("--dose", action="append", metavar="COMPARTMENT=AMOUNT[@TIME]",
                   help="bolus dose at TIME (default 0; repeatable), e.g. --dose P=500@12")
    p.add_argument("--out", help="write the wide table (time, compartments, observables) to this CSV")
    p.add_argument("--plot", help="write a plot to this image file")
    p.add_argument("--all", action="store_true", help="plot compartments as well as observables")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance, numerical path (default 1e-8)")
    p.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance, numerical path (default 1e-10)")
    p.add_argument("--json", action="store_true", help="print the table as JSON records (one per time) with the units")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("fit", help="fit a worked case folder (fit.toml + data) and write result.json, report.txt, plots")
    p.add_argument("case", help="a folder holding fit.toml, or the fit.toml itself")
    p.add_argument("--out", help="output folder (default: CASE/results)")
    p.add_argument("--multistart", type=_integer, help="number of starts (default: the spec's)")
    p.add_argument("--seed", type=_integer, help="seed of the multi-start design (default: the spec's)")
    p.add_argument("--method", help="least_squares (default), leastsq, differential_evolution, basinhopping, ...")
    p.add_argument("--engine", choices=["auto", "lmfit"],
                   help="where local fits run: auto (default; compiled trust-region steps, lmfit finishes) or lmfit (every step)")
    p.add_argument("--no-profiles", action="store_true", help="skip profile-likelihood intervals")
    p.add_argument("--mcmc", type=_integer, metavar="STEPS", help="also sample the posterior with emcee (needs the mcmc extra)")
    p.add_argument("--serial", action="store_true", help="never use a process pool for the starts")
    p.add_argument("--dask", metavar="SCHEDULER_ADDRESS",
                   help="run the starts, profiles and MCMC chains on a dask.distributed cluster, e.g. tcp://HOST:8786 "
                        "(needs the dask extra)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--figure-format", action="append", metavar="FORMAT",
                   help="also write the figures as svg or pdf (repeatable or comma-separated; PNG at 300 dpi always)")
    p.add_argument("--json", action="store_true", help="print the result.json content instead of the text report")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("compare", help="compare fits of model variants to the same data (AIC, AICc, BIC, weights, LRT)")
    p.add_argument("dirs", nargs="+", help="fit output folders (each with result.json)")
    p.add_argument("--nested", action="append", metavar="SMALL<LARGE", help="declare a nested pair by folder name")
    p.add_argument("--plot", help="write the curves of all variants (and NAME_weights.png) to this image file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("steady", help="steady state, stability, fluxes and sensitivities of a model")
    p.add_argument("model", help="model file (.toml, or SBML .xml) or bundled model name")
    p.add_argument("--scale", action="append", metavar="NAME=FACTOR", help="what-if: scale a parameter, shown beside the baseline")
    _add_prediction_options(p)
    p.set_defaults(func=cmd_steady)

    p = sub.add_parser("pk", help="pharmacokinetic summary of a bolus dose (AUC, CL, Vss, MRT, half-lives)")
    p.add_argument("model", help="model file (.toml, or SBML .xml) or bundled model name")
    p.add_argument("--dose", required=True, metavar="COMPARTMENT=AMOUNT[@0]", help="bolus at time 0, e.g. --dose plasma=1e10")
    p.add_argument("--observable", required=True, help="measured compartment or observable (e.g. a concentration)")
    p.add_argument("--t-last", type=float, help="last sampling time, for AUC(0-tlast)")
    _add_prediction_options(p)
    p.set_defaults(func=cmd_pk)

    p = sub.add_parser("export", help="write a model in another format (sbml: SBML Level 3 version 2)")
    p.add_argument("format", choices=["sbml", "petab"], help="the format to write (petab: a PEtab v1 problem)")
    p.add_argument("model", help="model file (.toml or .xml), bundled model name, or fit case folder; for petab: "
                                 "a fit case folder or a finished fit (a folder with result.json)")
    p.add_argument("--out", required=True, help="the file to write (e.g. model.xml); for petab the folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="posterior-predictive bands of a saved fit (parameter draws and measurement noise)")
    p.add_argument("--fit", required=True, metavar="DIR", help="a saved fit (folder with result.json)")
    p.add_argument("--case", help="the fit case (folder with fit.toml; default: DIR or its parent)")
    p.add_argument("--samples", type=_integer, default=1000, help="parameter draws (default 1000)")
    p.add_argument("--condition", help="one condition (default: every condition of the fit)")
    p.add_argument("--times", help="output times, comma-separated (default: --points from 0 to the last data time)")
    p.add_argument("--points", type=_integer, default=101, help="number of output times without --times (default 101)")
    p.add_argument("--no-noise", action="store_true", help="parameter uncertainty only (no measurement noise)")
    p.add_argument("--seed", type=_integer, default=0, help="random seed (default 0)")
    p.add_argument("--out", help="write the bands (condition, name, time, lower, median, upper) to this CSV")
    p.add_argument("--plot", help="write a plot of the bands with the data to this image file")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("petab", help="PEtab v1 problems: evaluate the log-likelihood at the nominal parameters")
    p.add_argument("action", choices=["evaluate"], help="evaluate: log-likelihood, chi2, number of measurements")
    p.add_argument("problem", help="the PEtab problem's YAML file")
    p.add_argument("--json", action="store_true", help='print {"llh": ..., "chi2": ..., "n_measurements": ...}')
    p.set_defaults(func=cmd_petab)

    p = sub.add_parser("demo", help="run the worked example end to end")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    # (a kernel group compiling on first use says so itself: kinetics.numerics.compile_notice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", KineticsWarning)
            original = warnings.formatwarning
            warnings.formatwarning = lambda message, category, *a, **k: f"warning: {clean_text(message, MESSAGE_LIMIT)}\n"
            try:
                return args.func(args) or 0
            finally:
                warnings.formatwarning = original
    except KineticsError as exc:
        if args.debug:
            raise
        _error(exc)
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as exc:   # a missing or unreadable file, a read-only or full disk
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}" + _OS_HINTS.get(exc.errno, ""))
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _broken_pipe():
    """Output piped into head and the like: stop quietly."""
    try:
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass
    return 0


_OS_HINTS = {
    errno.ENOSPC: " (the disk is full: free some space or write elsewhere; any previous result is unchanged)",
    errno.EDQUOT: " (disk quota exceeded: free some space or write elsewhere; any previous result is unchanged)",
    errno.EROFS: " (a read-only file system: write the output elsewhere)",
    errno.EACCES: " (permission denied: write the output elsewhere or fix the permissions)",
}


if __name__ == "__main__":
    sys.exit(main())
