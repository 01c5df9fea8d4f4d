"""README examples run exactly as written."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
BASH_LINES = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
              for line in block.splitlines() if line.strip().startswith("kinetics ")]


@pytest.fixture
def in_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def test_python_examples_run(in_repo):
    namespace = {}
    for block in PYTHON_BLOCKS:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation


def test_command_line_examples_run(tmp_path):
    # run in a scratch copy of the working directory layout: outputs land in tmp_path
    env = {**os.environ, "MPLBACKEND": "Agg", "KINETICS_MODELS": str(ROOT / "models")}
    for line in BASH_LINES:
        args = shlex.split(line)
        args = [str(ROOT / a) if (a.startswith("models/") or a.startswith("fits/")) else a for a in args]
        proc = subprocess.run([sys.executable, "-m", "kinetics.cli", *args[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{line}\n{proc.stderr}"
