"""The hostile-input and fault table (issue #8, "Bad input and faults").

Each row builds an input in a temporary folder (text, bytes, or a special file: a FIFO, a
symlink to /dev/zero, a folder where a file belongs, a sparse file over the size limit), runs
one API call or one CLI command (``kinetics.cli.main`` in-process) and states what must happen:
the right exception class or exit code, a message naming the file / entry / option, no
traceback, nothing long echoed back, and no output file left behind. Nothing may hang (every
row runs under an alarm) or exhaust memory (rows that could run with a limit on address space).

Rows whose fix lives on another developer's branch are marked ``xfail(strict=True)`` naming
that branch; after merging it, the marker must be removed (strict: a fixed row fails until then).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import MODEL_TEXT, variant
from fitting_helpers import CLEARANCE_FIT_TOML, CLEARANCE_MODEL_TOML, variant_of, write_clearance_case

MAX_MESSAGE = 2000          # no error paragraph may be longer: nothing is echoed whole
ROW_TIMEOUT = 30            # seconds; a row that takes longer counts as a hang
MEMORY_HEADROOM = 2 * 1024 ** 3  # extra address space a guarded row may take (bytes)


# ----------------------------------------------------------------------------- special files
@dataclass(frozen=True)
class Special:
    """A file that is not plain content: 'fifo', 'dir', 'symlink' (to ``target``), 'sparse'
    (``size`` bytes of holes)."""
    kind: str
    target: str = ""
    size: int = 0


FIFO = Special("fifo")
FOLDER = Special("dir")
DEV_ZERO = Special("symlink", "/dev/zero")


def symlink(target):
    return Special("symlink", target)


def sparse(size):
    return Special("sparse", size=size)


# ----------------------------------------------------------------------------- base inputs
@lru_cache(maxsize=None)
def clearance_texts() -> dict:
    """model.toml, fit.toml and data.csv of the small clearance case (see fitting_helpers)."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        case = write_clearance_case(Path(folder) / "case")
        return {name: (case / name).read_text(encoding="utf-8") for name in ("model.toml", "fit.toml", "data.csv")}


def case(fit=None, model=None, data=None, **extra):
    """The files of a fit folder ``case/``: the clearance case with any file replaced."""
    def build():
        base = clearance_texts()
        files = {"case/model.toml": model if model is not None else base["model.toml"],
                 "case/fit.toml": fit if fit is not None else base["fit.toml"],
                 "case/data.csv": data if data is not None else base["data.csv"]}
        files.update(extra)
        return files
    return build


def spec_variant(old, new):
    """The clearance fit spec with ``old`` replaced by ``new`` (exactly once)."""
    return case(fit=variant_of(CLEARANCE_FIT_TOML, old, new))


def spec_appended(text):
    return case(fit=CLEARANCE_FIT_TOML + "\n" + text + "\n")


GOOD_DATA = "time,observable,value\n0.5,plasma_conc,10\n1,plasma_conc,5\n"
SIGMA_DATA = "time,observable,value,sigma\n0.5,plasma_conc,10,1\n1,plasma_conc,5,1\n"
BLOWUP_MODEL = """name = "blowup"
[compartments]
P = { initial = 1 }
[parameters]
k = { value = 1.0 }
[flows]
growth = { to = "P", rate = "k * P" }
"""
NO_STEADY_MODEL = """name = "accumulate"
[compartments]
P = { initial = 0 }
[parameters]
s = { value = 1.0 }
[flows]
production = { to = "P", rate = "s" }
"""


def deep_toml(depth, opener="[", closer="]"):
    return "x = " + opener * depth + closer * depth + "\n"


def deep_tables(depth):
    return "x = " + "{ a = " * depth + "1" + " }" * depth + "\n"


def rows_csv(n):
    """A clearance data set of ``n`` rows (replicates at 40 times)."""
    times = np.repeat(np.geomspace(0.1, 6.0, 40), n // 40)
    values = 50.0 * np.exp(-0.7 * times) * (1 + 0.1 * np.random.default_rng(0).standard_normal(times.size))
    lines = ["time,observable,value,condition"]
    lines += [f"{t:.6g},conc,{v:.6g},control" for t, v in zip(times, values)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- API actions
def api_load_model(name="model.toml"):
    def run(tmp):
        from kinetics import load_model
        return load_model(tmp / name)
    return run


def api_load_data(name="data.csv", **kw):
    def run(tmp):
        from kinetics.io.data import load_data
        return load_data(tmp / name, **kw)
    return run


def api_load_spec(where="case"):
    def run(tmp):
        from kinetics.fitting.problem import load_fit_spec
        return load_fit_spec(tmp / where)
    return run


def api_simulate(model_name="model.toml", times=(0.0, 1.0, 2.0), **kw):
    def run(tmp):
        from kinetics import load_model, simulate
        return simulate(load_model(tmp / model_name), list(times), **kw)
    return run


def api_fit(**kw):
    def run(tmp):
        from kinetics.fitting.optimize import fit
        from kinetics.fitting.problem import load_fit_spec
        return fit(load_fit_spec(tmp / "case"), progress=False, profiles=False, **kw)
    return run


def api_load_data_frame(frame_rows):
    def run(tmp):
        import pandas as pd
        from kinetics.io.data import load_data
        return load_data(pd.DataFrame(frame_rows, columns=["time", "observable", "value"]))
    return run


# ----------------------------------------------------------------------------- the row type
@dataclass
class Row:
    id: str
    files: dict | Callable = field(default_factory=dict)
    api: Callable | None = None     # run(tmp) for an API row
    cli: list | None = None         # argv for a CLI row ("{tmp}" is the folder)
    error: type | str | None = None  # API: the exception class (name); None: must succeed
    code: int = 1                   # CLI: the exit code
    fragments: tuple = ()           # each must appear in the message ("{tmp}" expanded)
    absent: tuple = ()              # texts that must not appear in the message
    no_files: tuple = ()            # paths (under tmp) that must not exist afterwards
    xfail: str | None = None        # branch that fixes it
    guarded: bool = False           # run under a memory limit (it could exhaust memory)
    root_ok: bool = True            # False: skipped when running as root
    check: Callable | None = None   # extra check(tmp, outcome) on success


def build_files(tmp: Path, files):
    if callable(files):
        files = files()
    for name, content in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Special):
            if content.kind == "fifo":
                os.mkfifo(path)
            elif content.kind == "dir":
                path.mkdir()
            elif content.kind == "symlink":
                target = content.target.replace("{tmp}", str(tmp))
                os.symlink(target, path)
            elif content.kind == "sparse":
                with open(path, "wb") as handle:
                    handle.truncate(content.size)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


class Hang(Exception):
    pass


@contextlib.contextmanager
def alarm(seconds):
    def on_alarm(signum, frame):
        raise Hang(f"no answer after {seconds} s (a hang)")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_row(row: Row, tmp: Path):
    """Build the row's input in ``tmp``, run it and assert its expectation (AssertionError if not)."""
    build_files(tmp, row.files)
    expand = lambda text: text.replace("{tmp}", str(tmp))
    if row.cli is not None:
        from kinetics.cli import main
        out, err = io.StringIO(), io.StringIO()
        with alarm(ROW_TIMEOUT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([expand(str(a)) for a in row.cli])
            except SystemExit as exc:       # argparse rejects an option
                code = exc.code
            except BaseException as exc:    # noqa: BLE001 - any escape is the failure reported
                code = f"uncaught {type(exc).__name__}"
                traceback.print_exc(file=err)
        out, err = out.getvalue(), err.getvalue()
        expected_code = row.code
        assert code == expected_code, f"exit code {code!r}, expected {expected_code}; stderr: {err[-1500:]!r}"
        assert "Traceback" not in err and "Traceback" not in out, f"a traceback: {err[-1500:]}"
        message = err.strip()
        if expected_code == 1:
            assert message.startswith("error: "), f"no error paragraph: {message[:500]!r}"
            assert "\n\n" not in message, "the error is more than one paragraph"
        assert "\x1b" not in err + out, "terminal escape bytes reach the terminal"
    else:
        outcome, raised = None, None
        with alarm(ROW_TIMEOUT):
            try:
                outcome = row.api(tmp)
            except Hang:
                raise
            except BaseException as exc:    # noqa: BLE001 - compared with the expectation below
                raised = exc
        if row.error is None:
            assert raised is None, f"unexpected {type(raised).__name__}: {str(raised)[:1000]}"
            if row.check:
                row.check(tmp, outcome)
            message = ""
        else:
            expected = row.error if isinstance(row.error, str) else row.error.__name__
            assert raised is not None, "no error raised"
            names = [cls.__name__ for cls in type(raised).__mro__]
            assert expected in names, (f"raised {type(raised).__name__} (expected {expected}): "
                                       f"{str(raised)[:1000]}")
            message = str(raised)
            assert "\n\n" not in message, "the error is more than one paragraph"
    assert len(message) <= MAX_MESSAGE, f"the message is {len(message)} characters long"
    for fragment in row.fragments:
        assert expand(fragment) in message, f"{expand(fragment)!r} not in {message[:1500]!r}"
    for text in row.absent:
        assert text not in message, f"{text!r} is echoed in {message[:1500]!r}"
    for name in row.no_files:
        left = list(tmp.glob(name))
        assert not left, f"left behind: {left}"


def _address_space() -> int:
    """This process's current virtual memory size (bytes), from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def memory_guard(headroom=MEMORY_HEADROOM):
    """Allow at most ``headroom`` more bytes of address space while a row runs, so a row that
    reads /dev/zero or allocates a giant array gets MemoryError instead of the machine's memory."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ----------------------------------------------------------------------------- the table
M = "model.toml"
SPEC_PATH = "{tmp}/case/fit.toml"
DATA_PATH = "{tmp}/data.csv"
MODEL_PATH = "{tmp}/model.toml"


def model_variant(old, new):
    return {M: variant(old, new)}


ROWS = [
    # ---------------------------------------------------------------- model files
    Row("model-missing", {}, api_load_model(), error="ModelError", fragments=(MODEL_PATH, "not found")),
    Row("model-folder", {M: FOLDER}, api_load_model(), error="ModelError", fragments=(MODEL_PATH, "folder")),
    Row("model-fifo", {M: FIFO}, api_load_model(), error="ModelError", fragments=(MODEL_PATH, "not a regular file"),
        guarded=True),
    Row("model-dev-zero", {M: DEV_ZERO}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "not a regular file"), guarded=True),
    Row("model-symlink-to-valid", {"real.toml": MODEL_TEXT, M: symlink("{tmp}/real.toml")}, api_load_model()),
    Row("model-dangling-symlink", {M: symlink("{tmp}/gone.toml")}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "not found")),
    Row("model-over-size-limit", {M: sparse(11 * 1024 ** 2)}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "limit of 10 MB")),
    Row("model-latin1", {M: MODEL_TEXT.replace("early endosomes", "endosomes pr\u00e9coces").encode("latin-1")},
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "line 6", "byte offset", "save the file as UTF-8")),
    Row("model-binary", {M: b"\x7fELF\x02\x01\x01\x00\x00\x00" * 50}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "not a text file")),
    Row("model-utf16", {M: MODEL_TEXT.encode("utf-16")}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "UTF-8")),
    Row("model-utf8-bom", {M: b"\xef\xbb\xbf" + MODEL_TEXT.encode()}, api_load_model()),
    Row("model-empty", {M: ""}, api_load_model(), error="ModelError", fragments=(MODEL_PATH,)),
    Row("model-invalid-toml", {M: "name = \n"}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "not valid TOML")),
    Row("model-200000-deep-arrays", {M: deep_toml(200_000)}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "too deeply")),
    Row("model-200000-deep-inline-tables", {M: deep_tables(200_000)}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "too deeply")),
    Row("model-80-deep-arrays", {M: deep_toml(80)}, api_load_model(), error="ModelError",
        fragments=(MODEL_PATH, "more than 50 levels")),
    Row("model-unreadable", {M: MODEL_TEXT}, lambda tmp: (os.chmod(tmp / M, 0), api_load_model()(tmp)),
        error="ModelError", fragments=(MODEL_PATH, "cannot read"), root_ok=False),
    Row("model-nul-in-path", {}, lambda tmp: __import__("kinetics").load_model(str(tmp) + "/a\x00b.toml"),
        error="ModelError", fragments=("NUL",)),
    Row("model-section-is-number", {M: variant("[flows]\n", "flows = 5\n[unused]\n")
                                    .replace("[unused]\nendocytosis", "[flows2]\nendocytosis")},
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "flows")),
    Row("model-section-is-list", {M: variant("[observables]\n", "observables = [1, 2]\n[obs2]\n")},
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "observables")),
    Row("model-value-is-string", model_variant('k_mat  = { value = 0.5,', 'k_mat  = { value = "fast",'),
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "k_mat")),
    Row("model-value-is-table", model_variant('k_mat  = { value = 0.5,', 'k_mat  = { value = { a = 1 },'),
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "k_mat")),
    Row("model-value-is-list", model_variant('k_mat  = { value = 0.5,', 'k_mat  = { value = [0.5],'),
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "k_mat")),
    Row("model-400-digit-integer", model_variant('k_mat  = { value = 0.5,', 'k_mat  = { value = ' + "9" * 400 + ','),
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "k_mat")),
    Row("model-rate-is-boolean", model_variant('rate = "k_sec * MVB"', "rate = true"), api_load_model(),
        error="ModelError", fragments=(MODEL_PATH, "secretion")),
    Row("model-fixed-not-boolean", model_variant("max = 100, fixed = true", 'max = 100, fixed = "yes"'),
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "fixed")),
    Row("model-min-above-max", model_variant("min = 1e-3, max = 100, fixed", "min = 1e3, max = 100, fixed"),
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "k_cl")),
    Row("model-fullwidth-identifier", model_variant('rate = "k_mat * EE"', 'rate = "\uff4b_mat * EE"'),
        api_load_model(), error="ModelError", fragments=(MODEL_PATH, "maturation")),
    Row("model-1mb-expression", model_variant('rate = "k_mat * EE"', 'rate = "k_mat * EE' + " + k_matt" * 130_000 + '"'),
        api_load_model(), error="ModelError", fragments=(MODEL_PATH,)),
    Row("model-escape-bytes-to-terminal", model_variant('name = "mini"', 'name = "mini\\u001b[2J\\u001b[31m"'),
        cli=["steady", MODEL_PATH], code=0),
    Row("model-exp-1000-initial", model_variant("EE  = { initial = 100,", 'EE  = { initial = "exp(1000)",'),
        cli=["simulate", MODEL_PATH, "--out", "{tmp}/out.csv"], fragments=(MODEL_PATH,),
        no_files=("out.csv", ".out.csv*")),
    Row("model-exp-1000-rate", model_variant('rate = "k_sec * MVB"', 'rate = "exp(1000) * MVB"'),
        cli=["simulate", MODEL_PATH, "--out", "{tmp}/out.csv"], fragments=(MODEL_PATH,),
        no_files=("out.csv", ".out.csv*")),
    Row("model-blows-up-simulate-api", {M: BLOWUP_MODEL}, api_simulate(times=(0.0, 500.0, 1000.0)),
        error="KineticsError"),
    Row("model-blows-up-simulate-cli", {M: BLOWUP_MODEL},
        cli=["simulate", MODEL_PATH, "--t-end", "1000", "--out", "{tmp}/out.csv"],
        no_files=("out.csv", ".out.csv*")),
    Row("cli-steady-accumulating-sink", {M: NO_STEADY_MODEL}, cli=["steady", MODEL_PATH], code=0),
    Row("cli-steady-without-steady-state", {M: NO_STEADY_MODEL.replace('rate = "s"', 'rate = "s * P"')},
        cli=["steady", MODEL_PATH], fragments=("unstable",)),

    # ---------------------------------------------------------------- data files
    Row("data-missing", {}, api_load_data(), error="DataError", fragments=(DATA_PATH, "not found")),
    Row("data-folder", {"data.csv": FOLDER}, api_load_data(), error="DataError", fragments=(DATA_PATH, "folder")),
    Row("data-fifo", {"data.csv": FIFO}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "not a regular file"), guarded=True),
    Row("data-dev-zero", {"data.csv": DEV_ZERO}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "not a regular file"), guarded=True),
    Row("data-over-size-limit", {"data.csv": sparse(51 * 1024 ** 2)}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "limit of 50 MB")),
    Row("data-latin1", {"data.csv": "time,observable,value\n1,conc\u00e9,2\n".encode("latin-1")}, api_load_data(),
        error="DataError", fragments=(DATA_PATH, "row 2", "byte offset", "CSV UTF-8")),
    Row("data-binary", {"data.csv": b"\x00\x01\x02binary" * 100}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "not a text file")),
    Row("data-excel-workbook", {"data.csv": b"PK\x03\x04\x14\x00rest"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "CSV UTF-8")),
    Row("data-empty", {"data.csv": ""}, api_load_data(), error="DataError", fragments=(DATA_PATH, "empty")),
    Row("data-header-only", {"data.csv": "time,observable,value\n"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "no data rows")),
    Row("data-value-1e307", {"data.csv": GOOD_DATA + "2,plasma_conc,1e307\n"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "row 4", "absurd magnitude", "value")),
    Row("data-value-1e-320", {"data.csv": GOOD_DATA + "2,plasma_conc,1e-320\n"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "row 4", "absurd magnitude")),
    Row("data-sigma-1e-200", {"data.csv": SIGMA_DATA + "2,plasma_conc,3,1e-200\n"}, api_load_data(),
        error="DataError", fragments=(DATA_PATH, "row 4", "sigma")),
    Row("data-time-1e200", {"data.csv": GOOD_DATA + "1e200,plasma_conc,3\n"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "row 4", "time")),
    Row("data-value-inf", {"data.csv": GOOD_DATA + "2,plasma_conc,inf\n"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "row 4", "infinite")),
    Row("data-time-nan", {"data.csv": GOOD_DATA + "nan,plasma_conc,3\n"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "row 4", "missing time")),
    Row("data-negative-time", {"data.csv": GOOD_DATA + "-1,plasma_conc,3\n"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "row 4", "negative time")),
    Row("data-semicolons", {"data.csv": "time;observable;value\n1;c;2\n"}, api_load_data(), error="DataError",
        fragments=(DATA_PATH, "';'")),
    Row("data-unclosed-quote", {"data.csv": 'time,observable,value\n1,"c,2\n2,c,3\n'}, api_load_data(),
        error="DataError", fragments=(DATA_PATH,)),
    Row("data-system-file-not-echoed", {"data.csv": "root:$6$SeCrEtHaSh0123456789abcdefghijklmnopqrstuvwxyz:19000:0:99999:7:::\n"
                                                    "daemon:SECONDLINE:19000::::::\n"},
        api_load_data(), error="DataError", fragments=(DATA_PATH, "does not look like a data table"),
        absent=("SECONDLINE", "nopqrstuvwxyz:19000")),
    Row("data-escape-bytes-in-header", {"data.csv": "time,observable,value,\x1b[31mred\x1b[0m\n1,c,2,3\n"},
        api_load_data(), error="DataError", fragments=(DATA_PATH, "unknown column"), absent=("\x1b",)),
    Row("data-5000-unknown-columns", {"data.csv": "time,observable,value," + ",".join(f"c{i}" for i in range(5000))
                                      + "\n" + "1,c,2" + ",0" * 5000 + "\n"},
        api_load_data(), error="DataError", fragments=(DATA_PATH, "and 4990 more")),
    Row("data-1mb-cell", {"data.csv": GOOD_DATA + "2,plasma_conc," + "9x" * 500_000 + "\n"}, api_load_data(),
        error="DataError", fragments=(DATA_PATH, "row 4")),
    Row("data-utf8-bom", {"data.csv": b"\xef\xbb\xbf" + GOOD_DATA.encode()}, api_load_data()),
    Row("data-symlink-to-valid", {"real.csv": GOOD_DATA, "data.csv": symlink("{tmp}/real.csv")}, api_load_data()),
    Row("data-40000-rows-load", {"data.csv": rows_csv(40_000)}, api_load_data(),
        check=lambda tmp, ds: (ds.n_points == 40_000) or pytest.fail(f"{ds.n_points} points")),
    Row("data-dataframe-1e307", {}, api_load_data_frame([[1.0, "c", 2.0], [2.0, "c", 1e307]]), error="DataError",
        fragments=("DataFrame", "row 2", "absurd magnitude")),
    Row("data-not-a-path", {}, lambda tmp: __import__("kinetics.io.data").io.data.load_data(123), error="DataError",
        fragments=("int",)),

    # ---------------------------------------------------------------- fit specs
    Row("spec-missing", {}, api_load_spec(), error="DataError", fragments=("fit spec not found",)),
    Row("spec-fifo", case(**{"case/fit.toml": FIFO}), api_load_spec(), error="DataError",
        fragments=(SPEC_PATH, "not a regular file"), guarded=True),
    Row("spec-dev-zero", case(**{"case/fit.toml": DEV_ZERO}), api_load_spec(), error="DataError",
        fragments=(SPEC_PATH, "not a regular file"), guarded=True),
    Row("spec-latin1", case(**{"case/fit.toml": ("# r\u00e9sum\u00e9\n" + CLEARANCE_FIT_TOML).encode("latin-1")}),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "line 1", "UTF-8")),
    Row("spec-200000-deep", case(fit=deep_toml(200_000)), api_load_spec(), error="DataError",
        fragments=(SPEC_PATH, "too deeply")),
    Row("spec-fit-is-number", spec_variant("[fit]\n", "fit = 5\n[fitx]\n"), api_load_spec(), error="DataError",
        fragments=(SPEC_PATH,)),
    Row("spec-fit-is-list", case(fit="model = \"model.toml\"\ndata = \"data.csv\"\nfit = [1, 2]\n"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit]", "a table")),
    Row("spec-parameters-is-list", case(fit='model = "model.toml"\ndata = "data.csv"\nparameters = ["k_cl"]\n'
                                        '[fit]\nfree = ["k_cl"]\n'),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[parameters]", "a table")),
    Row("spec-conditions-is-number", case(fit='model = "model.toml"\ndata = "data.csv"\nconditions = 3\n'
                                          '[fit]\nfree = ["k_cl"]\n'),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[conditions]")),
    Row("spec-condition-is-list", spec_variant("[conditions.control]\ndoses = [ { compartment = \"P\", amount = 100, time = 0 } ]\n",
                                               "[conditions]\ncontrol = [1, 2]\n"),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[conditions.control]")),
    Row("spec-doses-is-table", spec_variant('doses = [ { compartment = "P", amount = 100, time = 0 } ]\n\n[conditions.knockdown]',
                                            'doses = { compartment = "P", amount = 100, time = 0 }\n\n[conditions.knockdown]'),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[conditions.control] doses", "a list")),
    Row("spec-dose-is-number", spec_variant('doses = [ { compartment = "P", amount = 100, time = 0 } ]\n\n[conditions.knockdown]',
                                            'doses = [ 5 ]\n\n[conditions.knockdown]'),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[conditions.control] dose 1")),
    Row("spec-dose-amount-boolean", spec_variant('doses = [ { compartment = "P", amount = 100, time = 0 } ]\n\n[conditions.knockdown]',
                                                 'doses = [ { compartment = "P", amount = true, time = 0 } ]\n\n[conditions.knockdown]'),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "dose 1 amount")),
    Row("spec-dose-amount-inf", spec_variant('doses = [ { compartment = "P", amount = 100, time = 0 } ]\n\n[conditions.knockdown]',
                                             'doses = [ { compartment = "P", amount = inf, time = 0 } ]\n\n[conditions.knockdown]'),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "dose 1 amount", "finite")),
    Row("spec-dose-at-t-inf", spec_variant('doses = [ { compartment = "P", amount = 100, time = 0 } ]\n\n[conditions.knockdown]',
                                           'doses = [ { compartment = "P", amount = 100, time = inf } ]\n\n[conditions.knockdown]'),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "dose 1 time", "finite")),
    Row("spec-initial-is-list", spec_variant("overrides = { k_cl", "initial = [1]\noverrides = { k_cl"),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[conditions.knockdown] initial")),
    Row("spec-overrides-is-number", spec_variant('overrides = { k_cl = "k_cl * kd" }', "overrides = 5"),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[conditions.knockdown] overrides")),
    Row("spec-multistart-string", spec_variant("multistart = 3", 'multistart = "3"'), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] multistart", "whole number")),
    Row("spec-multistart-1e9-integer", spec_variant("multistart = 3", "multistart = 1_000_000_000"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] multistart", "10,000")),
    Row("spec-multistart-1e9-float", spec_variant("multistart = 3", "multistart = 1e9"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] multistart", "whole number")),
    Row("spec-multistart-zero", spec_variant("multistart = 3", "multistart = 0"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] multistart")),
    Row("spec-seed-negative", spec_variant("seed = 0", "seed = -1"), api_load_spec(), error="DataError",
        fragments=(SPEC_PATH, "[fit] seed")),
    Row("spec-seed-boolean", spec_variant("seed = 0", "seed = true"), api_load_spec(), error="DataError",
        fragments=(SPEC_PATH, "[fit] seed")),
    Row("spec-max-nfev-zero", spec_variant("seed = 0", "seed = 0\nmax_nfev = 0"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] max_nfev")),
    Row("spec-free-is-number", spec_variant('free = ["k_cl", "V", "kd"]', "free = 5"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] free", "list")),
    Row("spec-free-is-table", spec_variant('free = ["k_cl", "V", "kd"]', "free = { k_cl = true }"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] free", "list")),
    Row("spec-free-numbers", spec_variant('free = ["k_cl", "V", "kd"]', "free = [1, 2]"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] free", "names")),
    Row("spec-log-scale-string", spec_variant("seed = 0", 'seed = 0\nlog_scale = "yes"'), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] log_scale", "true or false")),
    Row("spec-noise-number", spec_variant('noise = "proportional"', "noise = 2"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[fit] noise")),
    Row("spec-engine-unknown", spec_variant("seed = 0", 'seed = 0\nengine = "turbo"'), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "engine", "turbo")),
    Row("spec-model-is-number", spec_variant('model = "model.toml"', "model = 5"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "model")),
    Row("spec-data-is-list", spec_variant('data = "data.csv"', 'data = ["data.csv"]'), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "data", "a list")),
    Row("spec-data-outside-not-echoed",
        (lambda: {**case()(), "secret.txt": "root:$6$SeCrEtHaSh0123456789abcdefghijklmnopqrstuvwxyz:19000:0:::\n"
                                            "SECONDLINE\n",
                  "case/fit.toml": variant_of(CLEARANCE_FIT_TOML, 'data = "data.csv"', 'data = "../secret.txt"')}),
        api_load_spec(), error="DataError", fragments=("secret.txt", "does not look like a data table"),
        absent=("SECONDLINE", "nopqrstuvwxyz:19000")),
    Row("spec-data-dev-zero", spec_variant('data = "data.csv"', 'data = "/dev/zero"'), api_load_spec(),
        error="DataError", fragments=("/dev/zero", "not a regular file"), guarded=True),
    Row("spec-data-fifo", (lambda: {**case()(), "case/data.csv": FIFO}), api_load_spec(), error="DataError",
        fragments=("data.csv", "not a regular file"), guarded=True),
    Row("spec-data-folder", spec_variant('data = "data.csv"', 'data = "."'), api_load_spec(), error="DataError",
        fragments=("folder",)),
    Row("spec-parameter-value-string", spec_variant("k_cl = { value = 0.3 }", 'k_cl = { value = "x" }'),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[parameters.k_cl] value", "number")),
    Row("spec-parameter-400-digits", spec_variant("k_cl = { value = 0.3 }", "k_cl = { value = " + "9" * 400 + " }"),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[parameters.k_cl] value", "400-digit")),
    Row("spec-parameter-is-list", spec_variant("k_cl = { value = 0.3 }", "k_cl = [0.3]"),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "[parameters.k_cl]")),
    Row("spec-observables-entry-number", spec_appended("[observables]\nconc = 5"), api_load_spec(),
        error="DataError", fragments=(SPEC_PATH, "[observables.conc]")),
    Row("spec-frees-fixed-parameter", case(model=CLEARANCE_MODEL_TOML.replace("max = 1e3 }\nV", "max = 1e3, fixed = true }\nV")),
        api_load_spec(), error="DataError", fragments=(SPEC_PATH, "'k_cl'", "fixed = true", "fixed = false")),
    Row("spec-frees-fixed-parameter-deliberately",
        (lambda: {**case(model=CLEARANCE_MODEL_TOML.replace("max = 1e3 }\nV", "max = 1e3, fixed = true }\nV"))(),
                  "case/fit.toml": variant_of(CLEARANCE_FIT_TOML, "k_cl = { value = 0.3 }",
                                              "k_cl = { value = 0.3, fixed = false }")}),
        api_load_spec(), check=lambda tmp, problem: ("k_cl" in problem.free) or pytest.fail("k_cl not free")),
    Row("fit-40000-rows", case(data=rows_csv(40_000), fit='model = "model.toml"\ndata = "data.csv"\n'
                                                           '[fit]\nfree = ["k_cl"]\nnoise = "constant"\nmultistart = 1\n'
                                                           '[conditions.control]\n'
                                                           'doses = [ { compartment = "P", amount = 100, time = 0 } ]\n'),
        api_fit(executor=None), guarded=True),

    # ---------------------------------------------------------------- CLI options
    Row("cli-rtol-negative", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--rtol", "-1"], fragments=("--rtol",),
        ),
    Row("cli-atol-zero", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--atol", "0"], fragments=("--atol",),
        ),
    Row("cli-plot-unknown-format", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--plot", "{tmp}/x.xyz"],
        fragments=("--plot",), no_files=("x.xyz", ".x.xyz*")),
    Row("cli-points-2e9", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--points", "2000000000"],
        fragments=("--points",), guarded=True),
    Row("cli-points-one", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--points", "1"], fragments=("--points",)),
    Row("cli-t-end-nan", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--t-end", "nan"], fragments=("--t-end",)),
    Row("cli-t-end-inf", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--t-end", "inf"], fragments=("--t-end",),
        ),
    Row("cli-points-not-a-number", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--points", "many"], code=2),
    Row("cli-out-under-a-file", {M: MODEL_TEXT, "afile": "x"}, cli=["simulate", MODEL_PATH, "--out", "{tmp}/afile/out.csv"],
        fragments=("afile",)),
    Row("cli-set-unknown-parameter", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--set", "k_matt=1"],
        fragments=("k_matt",)),
    Row("cli-set-not-a-number", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--set", "k_mat=fast"],
        fragments=("--set",)),
    Row("cli-dose-inf", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--dose", "P=inf", "--out", "{tmp}/out.csv"],
        fragments=("--dose",), no_files=("out.csv",)),
    Row("cli-dose-at-t-inf", {M: MODEL_TEXT}, cli=["simulate", MODEL_PATH, "--dose", "P=1@inf", "--out", "{tmp}/out.csv"],
        fragments=("--dose",), no_files=("out.csv",)),
    Row("cli-fit-mcmc-negative", case(), cli=["fit", "{tmp}/case", "--mcmc", "-5", "--no-progress", "--serial",
                                              "--out", "{tmp}/res"], fragments=("--mcmc",), no_files=("res",),
        ),
    Row("cli-fit-seed-negative", case(), cli=["fit", "{tmp}/case", "--seed", "-1", "--no-progress", "--serial",
                                              "--out", "{tmp}/res"], fragments=("seed",), no_files=("res",),
        ),
    Row("cli-fit-multistart-zero", case(), cli=["fit", "{tmp}/case", "--multistart", "0", "--no-progress",
                                                "--out", "{tmp}/res"], fragments=("multistart",), no_files=("res",)),
    Row("cli-fit-multistart-1e9", case(), cli=["fit", "{tmp}/case", "--multistart", "1000000000", "--no-progress",
                                               "--out", "{tmp}/res"], fragments=("multistart", "10,000"),
        no_files=("res",)),
    Row("cli-fit-out-under-a-file", (lambda: {**case()(), "afile": "x"}),
        cli=["fit", "{tmp}/case", "--out", "{tmp}/afile/res", "--no-progress", "--serial", "--no-profiles"],
        fragments=("afile",)),
    Row("cli-fit-spec-wrong-type", spec_variant("multistart = 3", 'multistart = "many"'),
        cli=["fit", "{tmp}/case", "--no-progress", "--out", "{tmp}/res"], fragments=(SPEC_PATH, "multistart"),
        no_files=("res",)),
    Row("cli-fit-frees-fixed-parameter", case(model=CLEARANCE_MODEL_TOML.replace("max = 1e3 }\nV", "max = 1e3, fixed = true }\nV")),
        cli=["fit", "{tmp}/case", "--no-progress", "--out", "{tmp}/res"], fragments=("'k_cl'", "fixed = true"),
        no_files=("res",)),
    Row("cli-steady-samples-negative", {M: MODEL_TEXT}, cli=["steady", MODEL_PATH, "--samples", "-1"],
        fragments=("--samples",)),
    Row("cli-compare-malformed-result", {"a/result.json": "{ not json", "b/result.json": "[]"},
        cli=["compare", "{tmp}/a", "{tmp}/b"], fragments=("result.json",)),
    Row("cli-compare-missing-result", {"a": FOLDER, "b": FOLDER}, cli=["compare", "{tmp}/a", "{tmp}/b"],
        fragments=("{tmp}/a",)),
    Row("cli-model-fifo", {M: FIFO}, cli=["simulate", MODEL_PATH], fragments=(MODEL_PATH, "not a regular file"),
        guarded=True),
    Row("cli-model-latin1", {M: MODEL_TEXT.replace("early endosomes", "endosomes pr\u00e9coces").encode("latin-1")},
        cli=["simulate", MODEL_PATH], fragments=(MODEL_PATH, "UTF-8")),

    # ---------------------------------------------------------------- API arguments
    Row("api-simulate-times-nan", {M: MODEL_TEXT}, api_simulate(times=(0.0, float("nan"))), error="ModelError"),
    Row("api-simulate-times-empty", {M: MODEL_TEXT}, api_simulate(times=()), error="ModelError"),
    Row("api-simulate-times-unsorted", {M: MODEL_TEXT}, api_simulate(times=(2.0, 1.0)), error="ModelError"),
    Row("api-simulate-dose-inf", {M: MODEL_TEXT},
        api_simulate(doses=[{"compartment": "P", "amount": float("inf"), "time": 0}]), error="KineticsError",
        fragments=("dose",)),
    Row("api-simulate-dose-at-t-inf", {M: MODEL_TEXT},
        api_simulate(doses=[{"compartment": "P", "amount": 1.0, "time": float("inf")}]), error="KineticsError",
        fragments=("dose",)),
    Row("api-simulate-unknown-compartment", {M: MODEL_TEXT},
        api_simulate(doses=[{"compartment": "Q", "amount": 1.0, "time": 0}]), error="ModelError", fragments=("'Q'",)),
    Row("api-fit-executor-string", case(), api_fit(executor="threads"), error="KineticsError",
        fragments=("executor",)),
    Row("api-fit-multistart-1e9", case(), api_fit(multistart=10 ** 9), error="FitError",
        fragments=("multistart", "10,000")),
    Row("api-fit-unknown-method", case(), api_fit(method="gradient_magic"), error="FitError",
        fragments=("gradient_magic",)),
    Row("api-problem-free-as-string", case(),
        lambda tmp: __import__("kinetics.problem").problem.FitProblem(
            __import__("kinetics").load_model(tmp / "case/model.toml"), tmp / "case/data.csv", "k_cl"),
        error="DataError", fragments=("free",)),
]

ROWS_BY_ID = {row.id: row for row in ROWS}
assert len(ROWS_BY_ID) == len(ROWS), "duplicate row ids"


def _param(row):
    marks = []
    if row.xfail:
        marks.append(pytest.mark.xfail(strict=True, reason=f"fixed on branch {row.xfail}"))
    return pytest.param(row, id=row.id, marks=marks)


@pytest.mark.parametrize("row", [_param(row) for row in ROWS])
def test_hostile_input(row, tmp_path):
    if not row.root_ok and os.geteuid() == 0:
        pytest.skip("root reads any file whatever its mode; this row needs an unprivileged user")
    if row.guarded and sys.platform.startswith("linux"):
        with memory_guard():
            check_row(row, tmp_path)
    else:
        check_row(row, tmp_path)


def test_table_is_large_enough():
    """The table covers model files, data files, fit specs, CLI options and API arguments."""
    prefixes = {row.id.split("-")[0] for row in ROWS}
    assert {"model", "data", "spec", "cli", "api", "fit"} <= prefixes
    assert len(ROWS) >= 80
