"""Writing outputs: whole result folders (atomic swap, kills and full disks), permissions that
follow the umask, spreadsheet-safe CSV text cells."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kinetics import KineticsError
from kinetics.io.files import (atomic_folder, atomic_write, check_output_folder, csv_safe_frame, csv_safe_text,
                             csv_unsafe_text)

from conftest import REPO


def write_version(folder, version, names):
    with atomic_folder(folder) as stage:
        for name in names:
            (stage / name).write_text(f"{version}\n", encoding="utf-8")


def contents(folder):
    return {p.name: p.read_text(encoding="utf-8") for p in Path(folder).iterdir()}


def siblings(folder):
    return sorted(p.name for p in Path(folder).parent.iterdir() if p.name != Path(folder).name)


# ------------------------------------------------------------------ whole folders
def test_new_result_replaces_the_old_folder_whole(tmp_path):
    out = tmp_path / "results"
    write_version(out, "old", ["result.json", "curves.csv", "profiles.png"])
    write_version(out, "new", ["result.json", "curves.csv"])
    # profiles.png of the older result must not survive beside the new result.json
    assert contents(out) == {"result.json": "new\n", "curves.csv": "new\n"}
    assert siblings(out) == []   # no staging folder left


def test_failure_while_writing_leaves_the_old_folder_untouched(tmp_path):
    out = tmp_path / "results"
    write_version(out, "old", ["result.json", "curves.csv"])
    with pytest.raises(OSError) as info:
        with atomic_folder(out) as stage:
            (stage / "result.json").write_text("new\n")
            raise OSError(errno.ENOSPC, "No space left on device", str(stage / "curves.csv"))
    assert info.value.errno == errno.ENOSPC
    assert contents(out) == {"result.json": "old\n", "curves.csv": "old\n"}
    assert siblings(out) == []


def test_ctrl_c_while_writing_leaves_the_old_folder_untouched(tmp_path):
    out = tmp_path / "results"
    write_version(out, "old", ["result.json"])
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(out) as stage:
            (stage / "result.json").write_text("new\n")
            raise KeyboardInterrupt
    assert contents(out) == {"result.json": "old\n"}
    assert siblings(out) == []


def test_folder_with_foreign_files_is_refused_not_replaced(tmp_path):
    out = tmp_path / "case"
    out.mkdir()
    (out / "fit.toml").write_text("mine")
    (out / "result.json").write_text("old")
    with pytest.raises(KineticsError, match=r"holds files kinetics did not write \(fit\.toml\)"):
        write_version(out, "new", ["result.json"])
    assert contents(out) == {"fit.toml": "mine", "result.json": "old"}
    assert siblings(out) == []


@pytest.mark.parametrize("make, fragment", [
    (lambda d: (d / "file.txt").write_text("x") and d / "file.txt", "is a file, not a folder"),
    (lambda d: (d / "file.txt").write_text("x") and d / "file.txt" / "out", "is a file, so no folder can be created"),
])
def test_output_folder_that_cannot_be_a_folder(tmp_path, make, fragment):
    with pytest.raises(KineticsError, match=fragment):
        check_output_folder(make(tmp_path))


def test_read_only_location_is_found_by_the_check(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(KineticsError, match=r"cannot write into .*Read-only file system"):
        check_output_folder(tmp_path / "out")


def test_symlinked_output_folder_is_replaced_at_its_target(tmp_path):
    real = tmp_path / "real"
    write_version(real, "old", ["result.json"])
    link = tmp_path / "link"
    link.symlink_to(real)
    write_version(link, "new", ["result.json"])
    assert link.is_symlink() and contents(real) == {"result.json": "new\n"}


# ------------------------------------------------------------------ kills
WRITER = """
import sys
from kinetics.io.files import atomic_folder
target, version = sys.argv[1], 0
print("ready", flush=True)
while True:
    version += 1
    names = ["result.json", "report.txt", "curves.csv"] + (["profiles.png"] if version % 2 else [])
    with atomic_folder(target) as stage:
        for name in names:
            (stage / name).write_text(f"{version}\\n" + "x" * 100000)
"""


def check_whole(folder):
    """Every file of one version, and exactly that version's files."""
    files = contents(folder)
    versions = {text.split("\n", 1)[0] for text in files.values()}
    assert len(versions) == 1, f"mixed versions {versions} in {sorted(files)}"
    version = int(versions.pop())
    expected = {"result.json", "report.txt", "curves.csv"} | ({"profiles.png"} if version % 2 else set())
    assert set(files) == expected, f"version {version}: {sorted(files)}"
    return version


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_kill_while_saving_leaves_the_old_or_the_new_folder_whole(tmp_path, sig):
    out = tmp_path / "results"
    with atomic_folder(out) as stage:   # version 0: the "old" result
        for name in ("result.json", "report.txt", "curves.csv"):
            (stage / name).write_text("0\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(8)
    seen = set()
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(sig)
        proc.wait(timeout=30)
        proc.stdout.close()
        seen.add(check_whole(out))
    assert len(seen) > 1, "the writer never got to replace the folder: the test saw nothing"
    # a later save cleans what killed writers left behind
    write_version(out, "final", ["result.json"])
    assert contents(out) == {"result.json": "final\n"}
    assert siblings(out) == []


# ------------------------------------------------------------------ permissions
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        single = atomic_write(tmp_path / "table.csv", "a,b\n")
        write_version(tmp_path / "results", "v", ["result.json"])
    finally:
        os.umask(old)
    assert single.stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "results").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "results" / "result.json").stat().st_mode & 0o777 == file_mode


# ------------------------------------------------------------------ CSV text cells
@pytest.mark.parametrize("text, safe", [
    ("=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"),
    ("+1", "'+1"), ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("'=x", "''=x"), ("control", "control"), ("it's", "it's"), ("", ""),
])
def test_csv_text_is_neutralised_and_restored(text, safe):
    assert csv_safe_text(text) == safe
    assert csv_unsafe_text(safe) == text


def test_csv_safe_frame_touches_text_cells_only():
    import pandas as pd
    frame = pd.DataFrame({"condition": ["=1+1", "ok"], "value": [-1.0, 2.0]})
    safe = csv_safe_frame(frame)
    assert safe["condition"].tolist() == ["'=1+1", "ok"]
    assert safe["value"].tolist() == [-1.0, 2.0]
    assert frame["condition"].tolist() == ["=1+1", "ok"]   # a copy
