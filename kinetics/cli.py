"""The ``kinetics`` command line: thin wrappers over the library for the common jobs.

Every failure the user can cause exits non-zero with a one-paragraph message (the full
traceback only with ``--debug``)."""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import KineticsError, KineticsWarning

__all__ = ["main"]

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


def _parse_doses(items):
    """COMPARTMENT=AMOUNT[@TIME] bolus doses."""
    doses = []
    for item in items or ():
        name, sep, rest = item.partition("=")
        amount, _, when = rest.partition("@")
        try:
            doses.append({"compartment": name.strip(), "amount": float(amount), "time": float(when) if when else 0.0})
        except ValueError:
            raise KineticsError(f"--dose '{item}': expected COMPARTMENT=AMOUNT or COMPARTMENT=AMOUNT@TIME, e.g. --dose P=1e10@0") from None
        if not sep:
            raise KineticsError(f"--dose '{item}': expected COMPARTMENT=AMOUNT[@TIME]")
        bad = [what for what in ("amount", "time") if not math.isfinite(doses[-1][what])]
        if bad:
            raise KineticsError(f"--dose '{item}': the {' and '.join(bad)} must be finite numbers, "
                                f"e.g. --dose P=1e10@0")
    return doses


def _load(name_or_path):
    from .model.library import resolve_model_path
    from .model.core import load_model
    return load_model(resolve_model_path(name_or_path))


def cmd_models(args):
    from .model.library import bundled_models, models_dir
    library = bundled_models()
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
        _save_plot(lambda ax: sim.plot(ax=ax, names=sim.names if args.all else None, logy=args.logy), args.plot, plot_format)
        _say(f"wrote {args.plot}")
    if not args.out and not args.plot:
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
    _save_figure(fig, path, image_format, dpi=120)


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
    if args.dask and args.serial:
        raise KineticsError("--dask and --serial exclude each other: --dask runs the starts and profiles on a "
                            "dask cluster, --serial in this process; give one of them")
    client = _dask_client(args.dask) if args.dask else None
    _say(f"fitting {problem.model.name} to {problem.data.n_points} points "
         f"({', '.join(problem.condition_names)}; noise {problem.noise}; free: {', '.join(problem.free)})")
    try:
        executor = client.get_executor() if client is not None else (None if args.serial else "auto")
        result = fit(problem, multistart=args.multistart, seed=args.seed, method=args.method,
                     executor=executor, progress=not args.no_progress,
                     profiles=not args.no_profiles, mcmc={"steps": args.mcmc} if args.mcmc else None,
                     engine=args.engine)
    finally:
        if client is not None:
            client.close()
    _say(result.fit_report())
    written = result.save(out)
    _say(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0


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
            _save_figure(fig, target, plot_format, dpi=110)
            _say(f"wrote {target}")
    return 0


def cmd_steady(args):
    import json

    import pandas as pd

    from .analysis.steady import compare_scenarios, steady_state
    _count("--samples", args.samples, 0, MAX_DRAWS)
    model = _load(args.model)
    overrides = _parse_assignments(args.set)
    values = _fit_values(args.fit, model) if args.fit else {}
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
        uncertainty = steady_state_uncertainty(model, _fit_summary_at(args.fit, overrides), n_samples=args.samples)
        out["uncertainty"] = uncertainty.to_dict(orient="records")
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
    model = _load(args.model)
    doses = _parse_doses([args.dose])
    dose = {"compartment": doses[0]["compartment"], "amount": doses[0]["amount"]}
    overrides = _parse_assignments(args.set)
    values = _fit_values(args.fit, model) if args.fit else {}
    values.update(overrides)
    summary = pk_summary(model, dose, args.observable, values or None, t_last=args.t_last)
    out = summary.to_dict()
    uncertainty = None
    if args.fit:
        from .analysis.uncertainty import pk_uncertainty
        uncertainty = pk_uncertainty(model, _fit_summary_at(args.fit, overrides), dose, args.observable,
                                     n_samples=args.samples, t_last=args.t_last)
        out["uncertainty"] = uncertainty.to_dict(orient="records")
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
                      summary.covariance[np.ix_(keep, keep)], summary.log_scale[keep], samples)


def _held_text(overrides):
    if not overrides:
        return ""
    return " at " + ", ".join(f"{k} = {v:g}" for k, v in overrides.items()) + " (held fixed; the other parameters vary)"


def _fit_values(folder, model):
    """Best-fit values of a saved fit (result.json) for the model's parameters."""
    from .io.results import read_result
    path, data = read_result(folder)
    if data["model"].get("name") != model.name:
        raise KineticsError(f"{path}: this fit is of model '{data['model'].get('name')}', not '{model.name}'")
    return {name: entry["value"] for name, entry in data["parameters"].items() if name in model.parameters}


def cmd_export(args):
    from .io.sbml import write_sbml
    source = Path(args.model)
    if source.is_dir() and (source / "fit.toml").exists():  # a fit case: its model
        from .problem import load_fit_spec
        model = load_fit_spec(source / "fit.toml").model
    else:
        model = _load(args.model)
    write_sbml(model, args.out)
    print(f"wrote {args.out} (SBML Level 3 version 2, model '{model.name}')")
    return 0


def cmd_demo(args):
    from . import demo
    _check_out_folder(args.out)
    return demo.run(Path(args.out))


def _add_prediction_options(p):
    """Options shared by the commands that predict from a model (steady, pk)."""
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="set a parameter (repeatable)")
    p.add_argument("--fit", metavar="DIR", help="use the best-fit values of a saved fit, with 95 %% intervals")
    p.add_argument("--samples", type=_integer, default=300, help="parameter draws for the sampled intervals (default 300)")
    p.add_argument("--json", action="store_true", help="print JSON")


def build_parser():
    parser = argparse.ArgumentParser(prog="kinetics", description="Compartment kinetics of exosome production and clearance.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    # --debug also after the subcommand; SUPPRESS keeps a subcommand without it from resetting it
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, parents=[common], **k)

    p = sub.add_parser("models", help="list bundled models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("simulate", help="simulate a model file or bundled model")
    p.add_argument("model", help="model file (.toml, or SBML .xml) or bundled model name")
    p.add_argument("--t-end", type=float, default=48.0, help="end time, in the model's time unit (default 48)")
    p.add_argument("--points", type=_integer, default=101, help="number of output times (default 101)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a parameter value (repeatable)")
    p.add_argument("--dose", action="append", metavar="COMP=AMOUNT[@TIME]", help="bolus dose (repeatable)")
    p.add_argument("--out", help="write the wide table (time, compartments, observables) to this CSV")
    p.add_argument("--plot", help="write a plot to this image file")
    p.add_argument("--all", action="store_true", help="plot compartments as well as observables")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance, numerical path (default 1e-8)")
    p.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance, numerical path (default 1e-10)")
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
    p.add_argument("--dose", required=True, metavar="COMP=AMOUNT", help="bolus at t = 0, e.g. plasma=1e10")
    p.add_argument("--observable", required=True, help="measured compartment or observable (e.g. a concentration)")
    p.add_argument("--t-last", type=float, help="last sampling time, for AUC(0-tlast)")
    _add_prediction_options(p)
    p.set_defaults(func=cmd_pk)

    p = sub.add_parser("export", help="write a model in another format (sbml: SBML Level 3 version 2)")
    p.add_argument("format", choices=["sbml"], help="the format to write")
    p.add_argument("model", help="model file (.toml or .xml), bundled model name, or fit case folder")
    p.add_argument("--out", required=True, help="the file to write (e.g. model.xml)")
    p.set_defaults(func=cmd_export)

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
