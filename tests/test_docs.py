"""The examples in docs/ run as written, so the documentation cannot drift from the code.

Each page is one test: its code blocks run in document order in a scratch folder holding copies of
the repository's models/ and fits/. ```python blocks share one namespace per page; in ```bash
blocks, every line starting with ``kinetics `` runs as the command line (other lines, such as
``make demo``, are not run). ```toml blocks must parse. An HTML comment on the line before a
block steers it:

- ``<!-- docs-test: skip -->``: not run (heavy examples; use sparingly);
- ``<!-- docs-test: file NAME -->``: the block is written to NAME in the scratch folder, so later
  blocks can use the file exactly as the page shows it.

A page with ``<!-- docs-test: requires MODULE -->`` anywhere is skipped when MODULE cannot be
imported (an optional extra that is not installed).
"""

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import kinetics

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

_BLOCK = re.compile(r"(?:^<!--\s*docs-test:\s*(?P<directive>[^>]*?)\s*-->\n)?^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```",
                    re.S | re.M)


def blocks(text):
    """(language, body, directive) of every fenced block, in order."""
    return [(m["lang"], m["body"], (m["directive"] or "").strip()) for m in _BLOCK.finditer(text)]


def command_lines(body):
    """The ``kinetics ...`` lines of a bash block, comments removed."""
    lines = []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("kinetics "):
            lines.append(shlex.split(line, comments=True))
    return lines


def _importable(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:     # a parent package is missing
        return False


def _page_id(path):
    return str(path.relative_to(DOCS))


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A working folder with copies of models/ and fits/ (fits write their results inside)."""
    for folder in ("models", "fits"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("results", "__pycache__"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("KINETICS_MODELS", str(tmp_path / "models"))
    return tmp_path


def test_docs_exist():
    names = {_page_id(p) for p in PAGES}
    for page in ("index.md", "getting-started.md", "cli.md", "api.md", "formats/model-file.md",
                 "formats/data-file.md", "formats/fit-spec.md", "formats/result-json.md"):
        assert page in names, f"docs/{page} is missing"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_examples_run(page, scratch):
    text = page.read_text(encoding="utf-8")
    for module in re.findall(r"<!--\s*docs-test:\s*requires\s+([\w.]+)\s*-->", text):
        if not _importable(module):
            pytest.skip(f"{_page_id(page)} needs {module}, which cannot be imported here (an optional extra, or a part of kinetics this checkout lacks)")
    # the CLI runs the same kinetics as this test imports (e.g. PYTHONPATH=another checkout)
    package_root = str(Path(kinetics.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    namespace = {"__name__": "__docs__"}
    for number, (lang, body, directive) in enumerate(blocks(text), start=1):
        where = f"{_page_id(page)}, block {number} ({lang or 'plain'})"
        if directive == "skip":
            continue
        if directive.startswith("file "):
            target = scratch / directive.split(None, 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body, encoding="utf-8")
        if lang == "toml":
            try:
                tomllib.loads(body)
            except tomllib.TOMLDecodeError as exc:
                pytest.fail(f"{where} is not valid TOML: {exc}")
        elif lang == "python":
            exec(compile(body, where, "exec"), namespace)  # noqa: S102 - our own documentation
        elif lang == "bash":
            for args in command_lines(body):
                proc = subprocess.run([sys.executable, "-m", "kinetics.cli", *args[1:]], cwd=scratch, env=env,
                                      capture_output=True, text=True, timeout=600)
                assert proc.returncode == 0, f"{where}: {shlex.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_block_directives_are_known():
    """A misspelt directive would silently run (or not write) a block."""
    for page in PAGES:
        for lang, _, directive in blocks(page.read_text(encoding="utf-8")):
            assert directive == "" or directive == "skip" or directive.startswith("file "), \
                f"{_page_id(page)}: unknown docs-test directive '{directive}'"
        for directive in re.findall(r"<!--\s*docs-test:\s*([^>]*?)\s*-->", page.read_text(encoding="utf-8")):
            assert re.fullmatch(r"skip|file \S+|requires [\w.]+", directive), \
                f"{_page_id(page)}: unknown docs-test directive '{directive}'"


def _readme_layout_rows():
    """The rows of README.md's "What is inside" table: first-column names -> the row's text."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## What is inside" in readme, "README.md has no 'What is inside' section"
    section = readme.split("## What is inside", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for match in re.finditer(r"^\|\s*(?P<names>[^|]+?)\s*\|(?P<text>.*)\|\s*$", section, re.M):
        for name in re.findall(r"`([\w.]+)/?`", match["names"]):
            rows[name] = match["text"]
    return rows


def test_readme_layout_table_matches_the_package():
    """Every subpackage of kinetics/ has a row naming each of its modules, every top-level module
    that is not an old import path is named, and no row names a subpackage that is gone."""
    rows = _readme_layout_rows()
    package = ROOT / "kinetics"
    subpackages = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    for sub in subpackages:
        assert sub in rows, f"README 'What is inside' has no row for kinetics/{sub}/"
        for module in sorted((package / sub).glob("*.py")):
            if module.stem != "__init__":
                assert f"`{module.stem}`" in rows[sub], \
                    f"README 'What is inside', row {sub}/: module kinetics/{sub}/{module.stem}.py is not named"
    # old import paths (thin re-exports) are described below the table, not in it
    shims = {"fit", "problem", "steady", "compare", "pk"}
    for module in sorted(package.glob("*.py")):
        if module.stem not in shims | {"__init__"}:
            assert module.stem in rows, f"README 'What is inside' does not name kinetics/{module.name}"
    for name in rows:
        assert name in subpackages or (package / f"{name}.py").is_file(), \
            f"README 'What is inside' names '{name}', which kinetics/ does not have"
