"""The command line's last line of defence: an error a user can cause becomes one line, exit 2.

`run_cleanly` wraps every command. Besides the project's own errors (`errors.MriRobustError`) it
recognises what the environment and the file-format libraries raise when the input, not the code,
is at fault: OS errors (a full disk, no permission, a folder where a file should be), torch
device errors, parse errors of h5py, pydicom, nibabel, ISMRMRD, PIL and YAML, and Ctrl-C
("interrupted", exit 130). Anything else is a bug and keeps its traceback. The line is printed on
a fresh line (live progress bars are closed first); half-written files are never left because
every output goes through `atomic.atomic_path`.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from mrirobust.errors import MriRobustError

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
MAX_LENGTH = 400  # characters of one message; longer ones are cut
PARSERS = ("h5py", "pydicom", "nibabel", "ismrmrd", "xsdata", "PIL", "yaml")  # format libraries
_PARSE_BUILTINS = (ValueError, KeyError, IndexError, EOFError, UnicodeDecodeError)  # raised inside them
_PATH_NAMES = ("path", "filename", "fname", "fp", "file_path", "src")  # locals that name the file read

_OS_HINTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "is a file, not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large (a file-size limit?)",
}
_DEVICE_MESSAGES = re.compile(
    r"invalid device string|device string must not be empty|device type at start of device string"
    r"|not compiled with \w+ enabled|invalid device ordinal|no CUDA GPUs are available|found no NVIDIA driver"
    r"|CUDA driver initialization failed|out of memory|from the '\w+' backend|torch\._C' has no attribute '_cuda",
    re.IGNORECASE)


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 3] + "..."


def _library(error: BaseException, tb: TracebackType | None) -> str | None:
    """The format library an error comes from: its class's package, or the innermost frame's."""
    top = type(error).__module__.partition(".")[0]
    if top in PARSERS:
        return top
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and isinstance(error, _PARSE_BUILTINS):
        module = str(tb.tb_frame.f_globals.get("__name__", "")).partition(".")[0]
        return module if module in PARSERS else None
    return None


def _file_in_traceback(tb: TracebackType | None) -> str | None:
    """The innermost existing file named by a local `path` (or alike) of the failing calls:
    third-party parse errors rarely say which file they were reading."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in _PATH_NAMES:
            value = frame.f_locals.get(name)
            if isinstance(value, (str, os.PathLike)) and str(value) and os.path.exists(value):
                return str(value)
    return None


def _describe_os_error(error: OSError, tb: TracebackType | None) -> str:
    problem = _OS_HINTS.get(error.errno) or error.strerror or str(error)
    name = error.filename if error.filename is not None else _file_in_traceback(tb)
    where = "" if name is None else f"{os.fsdecode(name)}: "
    also = "" if error.filename2 is None else f" ({os.fsdecode(error.filename2)})"
    return f"{where}{problem}{also}"


def describe(error: BaseException) -> str | None:
    """One line for an error the user can cause, or None for a bug (which keeps its traceback)."""
    tb = error.__traceback__
    if isinstance(error, MriRobustError):
        return _one_line(str(error))
    library = _library(error, tb)
    if library is not None:
        name = _file_in_traceback(tb)
        where = "" if name is None else f"{name}: "
        return _one_line(f"{where}cannot read the file ({library}: {type(error).__name__}: {error})")
    if isinstance(error, OSError):
        return _one_line(_describe_os_error(error, tb))
    if isinstance(error, (RuntimeError, AssertionError, NotImplementedError, AttributeError)) \
            and _DEVICE_MESSAGES.search(str(error)):
        return _one_line(f"device: {error}")
    if isinstance(error, MemoryError):
        return _one_line(f"out of memory{f': {error}' if str(error) else ''} (try a smaller --batch-size)")
    return None


def _fresh_line() -> None:
    """Close live tqdm bars (which ends their line) so the message starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        bar.close()
    sys.stdout.flush()


def report(line: str) -> None:
    """Print `mrirobust: LINE` to stderr on a fresh line."""
    _fresh_line()
    print(f"mrirobust: {line}", file=sys.stderr, flush=True)


def run_cleanly(command: Callable[[], Any]) -> int:
    """Run `command()`; 0 on success, else one line on stderr and 2 (130 after Ctrl-C).

    A bug (an error `describe` does not recognise) is re-raised with its traceback.
    """
    try:
        command()
    except KeyboardInterrupt:
        report("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:
        line = describe(error)
        if line is None:
            raise
        report(f"error: {line}")
        return EXIT_ERROR
    return 0
