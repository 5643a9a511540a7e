"""Atomic file output: a result file is either complete or absent, never half-written.

A file is written under a temporary name beside it, then renamed. Temporary names are
`.NAME.HOST.PID.TOKEN.mrirobust.tmp`: a run that was killed (no `finally` ran) leaves such a file,
and the next write into the same folder removes every one whose process is gone.
Files get the mode the umask gives, as a plain `open` would (not mkstemp's 0600).
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mrirobust.errors import DataError

TEMP_SUFFIX = ".mrirobust.tmp"
_HOST = socket.gethostname().replace(".", "-") or "host"
# Output errors that carry no file name (a write, a flush) and so must be the output's.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
_swept: set[Path] = set()  # folders already cleaned of stale temporaries by this process


def temp_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of the process that made temporary file `name`, or None for any other name."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return None
    parts = name[: -len(TEMP_SUFFIX)].rsplit(".", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files in `folder` left by processes of this host that no longer run."""
    removed = []
    for entry in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        owner = temp_owner(entry.name)
        if owner is not None and owner[0] == _HOST and owner[1] != os.getpid() and not _running(owner[1]):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def make_folder(folder: Path) -> None:
    """mkdir -p, naming the part of the path that is a file instead of a folder (ENOTDIR)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(blocker)) from None


def check_output(path: str | Path, *, folder: bool = False) -> None:
    """Before any compute: DataError unless `path` can be written as a file (or, with `folder`,
    created or filled as a folder): no folder where the file goes, no file where a folder must
    be, and the nearest existing folder writable. Creates nothing."""
    path = Path(path)
    if path.exists() and folder != path.is_dir():
        raise DataError(path, "is a file, not a folder" if folder else "is a folder, expected a file")
    existing = path if path.is_dir() else next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise DataError(existing, "is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):  # what the final rename needs
        raise DataError(existing, "permission denied: cannot write in this folder")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    The temporary file lives in the same folder so the final `os.replace` is atomic. An OSError
    about the temporary file (or a nameless one such as ENOSPC) is re-raised naming `path`.
    """
    path = Path(path)
    make_folder(path.parent)
    folder = path.parent.resolve()
    if folder not in _swept:
        remove_stale_temps(folder)
        _swept.add(folder)
    tmp = path.parent / f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0o666 minus the umask
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        nameless = error.filename is None and error.errno in _OUTPUT_ERRNOS
        if nameless or (error.filename is not None and str(error.filename) == str(tmp)):
            error.filename, error.filename2 = str(path), None
        raise
    finally:
        tmp.unlink(missing_ok=True)
