"""Files in and out. Reading: only regular files, with a size cap, UTF-8 with a clear error,
TOML with a nesting guard. Writing: atomic; a result is written to a temporary file beside its destination and
renamed into place, so an existing result is never half-overwritten. A result folder is
written whole into a temporary sibling folder and swapped into place (see
:func:`atomic_folder`). Outputs follow the user's umask."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
import tomllib
from contextlib import contextmanager
from pathlib import Path

from ..errors import KineticsError

__all__ = ["atomic_write", "atomic_path", "atomic_folder", "check_output_folder", "output_mode",
           "csv_safe_text", "csv_unsafe_text", "csv_safe_frame", "RESULT_FILES"]

# The files `kinetics fit` / FitResult.save write into a result folder. A folder holding
# anything else is not replaced (it may hold the user's own files).
RESULT_FILES = frozenset({"result.json", "report.txt", "fit.png", "residuals.png", "curves.csv",
                          "profiles.png", "corner.png", "report.html"}
                         | {f"{stem}.{suffix}" for stem in ("fit", "residuals", "profiles", "corner")
                            for suffix in ("svg", "pdf")})

_STAGING_TAG = ".kinetics-"


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)   # no /proc: read by setting and restoring
    os.umask(mask)
    return mask


def output_mode(directory: bool = False) -> int:
    """The permission bits a new file (or directory) gets under the user's umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:   # platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (synced to disk,
    with the permissions a newly created file would have)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, output_mode())   # mkstemp creates 0600
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path, content: str | bytes) -> Path:
    """Write text or bytes to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
    return Path(path)


# ------------------------------------------------------------------ result folders
def check_output_folder(folder, owned=RESULT_FILES, what=None) -> Path:
    """Check, before any work, that ``folder`` can receive a result: it is a folder (or does
    not exist yet) holding only files kinetics writes (``owned``), and the nearest existing
    folder above it is writable. Raises KineticsError naming the problem and the fix; returns
    the folder as an absolute path (symbolic links resolved, so the link's target is replaced).
    """
    what = what or str(folder)
    folder = Path(os.path.realpath(folder))
    if folder.exists():
        if not folder.is_dir():
            raise KineticsError(f"{what}: '{folder}' is a file, not a folder; choose a folder for the results")
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in owned or not p.is_file())
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise KineticsError(
                f"{what}: '{folder}' holds files kinetics did not write ({shown}); a result folder is replaced "
                "as a whole, so they would be lost. Choose an empty or new folder, or move those files.")
    ancestor = folder.parent
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise KineticsError(f"{what}: '{ancestor}' is a file, so no folder can be created under it; choose another folder")
    try:   # a real probe: permission bits do not tell about read-only mounts or root
        os.rmdir(tempfile.mkdtemp(prefix=f".{folder.name}{_STAGING_TAG}{os.getpid()}-probe-", dir=ancestor))
    except OSError as exc:
        raise KineticsError(f"{what}: cannot write into '{ancestor}' ({exc.strerror or exc}); "
                            "choose a writable folder") from None
    return folder


def _rename_exchange(a, b) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # exists, owned by someone else
        return True
    return True


def _clean_stale(folder: Path) -> None:
    """Remove staging folders left by killed writers of ``folder`` (dead process ids); put back
    an old result that a killed fallback swap had moved aside."""
    pattern = re.compile(re.escape(f".{folder.name}{_STAGING_TAG}") + r"(old-)?(\d+)-")
    for sibling in folder.parent.iterdir():
        match = pattern.match(sibling.name)
        if not match or _pid_alive(int(match.group(2))):
            continue
        if match.group(1) and not folder.exists() and (sibling / "result").is_dir():
            os.rename(sibling / "result", folder)
        shutil.rmtree(sibling, ignore_errors=True)


@contextmanager
def atomic_folder(folder, owned=RESULT_FILES):
    """Yield an empty staging folder beside ``folder``; on success every file in it is synced
    and the staging folder replaces ``folder`` whole, so ``folder`` always holds either its old
    content or the new, never a mix (files of the old result that the new one lacks go too).
    On failure (an exception, Ctrl-C) the staging folder is removed and ``folder`` is untouched;
    after a kill -9 the next save removes the leftover. ``folder`` may hold only the ``owned``
    file names (see :func:`check_output_folder`)."""
    folder = check_output_folder(folder, owned)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(folder)
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}{_STAGING_TAG}{os.getpid()}-", dir=folder.parent))
    try:
        yield stage
        os.chmod(stage, output_mode(directory=True))   # mkdtemp creates 0700
        for path in stage.iterdir():
            _fsync_file(path)
        _fsync_dir(stage)
        try:
            os.rename(stage, folder)       # no folder yet (or an empty one)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                raise
            check_output_folder(folder, owned)     # nothing foreign appeared meanwhile
            if not _rename_exchange(stage, folder):
                old = Path(tempfile.mkdtemp(prefix=f".{folder.name}{_STAGING_TAG}old-{os.getpid()}-", dir=folder.parent))
                os.rename(folder, old / "result")
                os.rename(stage, folder)
                os.rename(old / "result", stage)
                os.rmdir(old)
        _fsync_dir(folder.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)   # the old content after a swap, or the aborted new


# ------------------------------------------------------------------ CSV text cells
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe_text(text: str) -> str:
    """A text cell that spreadsheets will not run as a formula: a cell starting with = + - @
    tab or carriage return (after any quotes) gets a leading ' (OWASP's advice). Reversed by
    :func:`csv_unsafe_text`."""
    return "'" + text if text.lstrip("'").startswith(_FORMULA_START) else text


def csv_unsafe_text(text: str) -> str:
    """The original of a cell written by :func:`csv_safe_text`."""
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(_FORMULA_START) else text


def csv_safe_frame(frame):
    """A copy of a DataFrame with every text cell and column name passed through
    :func:`csv_safe_text`, ready for ``to_csv``."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) in ("string", "str"):
            out[column] = out[column].map(lambda v: csv_safe_text(v) if isinstance(v, str) else v)
    out.columns = [csv_safe_text(c) if isinstance(c, str) else c for c in out.columns]
    return out
# ----------------------------------------------------------------------------- safe reading
# Every file a user names (model files, fit specs, data CSVs) is read through these helpers, so
# a FIFO cannot hang a command, /dev/zero cannot fill memory, and a Latin-1, binary or absurdly
# nested file gets one message naming the file and the fix.
__all__ += ["read_regular_file", "decode_utf8", "read_toml_file", "parse_toml_text", "sanitize_excerpt",
            "TEXT_SIZE_LIMIT", "DATA_SIZE_LIMIT"]

MB = 1024 * 1024
TEXT_SIZE_LIMIT = 10 * MB       # model files and fit specs
DATA_SIZE_LIMIT = 50 * MB       # data CSVs
MAX_TOML_DEPTH = 50             # nesting of tables/arrays; real files use 3 or 4
_EXCERPT_LENGTH = 40


def sanitize_excerpt(text, limit: int = _EXCERPT_LENGTH) -> str:
    """``text`` cut to ``limit`` characters, with control characters (terminal escapes, NUL,
    newlines) shown as ``?``: safe to put in a message about a file that may be anything."""
    text = str(text)
    cut = text[:limit]
    cleaned = "".join(c if c.isprintable() else "?" for c in cut)
    return cleaned + ("..." if len(text) > limit else "")


def read_regular_file(path, *, what: str, error: type[Exception], limit: int = TEXT_SIZE_LIMIT,
                      not_found_hint: str = "", folder_fix: str = "give the path of the file itself") -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes (``what`` names the kind
    of file in messages; ``error`` is the exception class raised for any problem)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found{not_found_hint}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror}); check that it exists and "
                    f"that you may read it") from None
    except ValueError:         # a NUL character in the path
        raise error(f"{sanitize_excerpt(path, 200)}: not a valid file name (it contains a NUL "
                    f"character); correct the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: cannot read it as a {what}: it is a folder; {folder_fix}")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: is not a regular file (a pipe, device or socket); a {what} must be an "
                    f"ordinary file: save the content to a file and give its path")
    if info.st_size > limit:
        raise error(f"{path}: the {what} is {info.st_size / MB:.1f} MB, more than the limit of "
                    f"{limit // MB} MB; check that this is the right file, or split it")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO after the check, open must not wait
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror}); check that you may read "
                    f"it") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: is not a regular file (a pipe, device or socket); a {what} must "
                        f"be an ordinary file")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 * MB, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None
    finally:
        os.close(fd)
    if total > limit:      # the file grew after the size check
        raise error(f"{path}: the {what} is larger than the limit of {limit // MB} MB; check that "
                    f"this is the right file, or split it")
    return b"".join(chunks)


def decode_utf8(raw: bytes, path, *, what: str, error: type[Exception], line_word: str = "line",
                save_as: str = "UTF-8") -> str:
    """``raw`` decoded as UTF-8 (a leading byte-order mark is dropped); a Latin-1 or binary file
    is reported with the line (``line_word``: 'row' for CSV) and byte offset of the first
    undecodable byte."""
    if b"\x00" in raw[:8192]:
        raise error(f"{path}: not a text file (it contains NUL bytes, so it looks binary); a {what} "
                    f"is UTF-8 text: give the right file, or save it as {save_as}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"{path}: {line_word} {line} (byte offset {exc.start}): not UTF-8 text (byte "
                    f"0x{raw[exc.start]:02x}, e.g. a Latin-1 or Windows-1252 character); save the "
                    f"file as {save_as}") from None


def toml_depth(value) -> int:
    """Nesting depth of parsed TOML (tables and arrays), computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_toml_text(text: str, path, *, what: str, error: type[Exception]) -> dict:
    """Parsed TOML; invalid or pathologically nested TOML raises ``error`` naming ``path``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}. Check quoting and that no key is written "
                    f"twice.") from None
    except RecursionError:     # the parser recurses once per nested array or inline table
        raise error(f"{path}: the {what} nests arrays or tables too deeply to read (more than "
                    f"{MAX_TOML_DEPTH} levels); a {what} needs only a few levels: check that this "
                    f"is the right file") from None
    if toml_depth(data) > MAX_TOML_DEPTH:
        raise error(f"{path}: the {what} nests arrays or tables more than {MAX_TOML_DEPTH} levels "
                    f"deep; a {what} needs only a few levels: check that this is the right file")
    return data


def read_toml_file(path, *, what: str, error: type[Exception],
                   limit: int = TEXT_SIZE_LIMIT) -> tuple[dict, bytes]:
    """(parsed TOML, raw bytes) of a regular UTF-8 TOML file of at most ``limit`` bytes."""
    raw = read_regular_file(path, what=what, error=error, limit=limit)
    text = decode_utf8(raw, path, what=what, error=error)
    return parse_toml_text(text, path, what=what, error=error), raw
