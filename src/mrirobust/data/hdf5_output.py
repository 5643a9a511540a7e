"""HDF5 files written so that a full disk or Ctrl-C is an ordinary Python error, never a crash.

HDF5 segfaults when it closes a file whose write failed (seen with ENOSPC and EFBIG, h5py 3.16),
so h5py never writes to disk itself here: it writes through a Python file object (h5py's fileobj
driver) that catches the first failure, lets HDF5 finish without writing more, and raises the
OSError once h5py has closed the file. Ctrl-C is held for the same reason: raised inside one of
those write callbacks it would fail the write.
"""

from __future__ import annotations

import errno
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import h5py


class _WriteGuard:
    """An unbuffered binary file for h5py that records the first write failure instead of raising it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while self.error is None and done < len(view):  # an unbuffered file may take only a part
            try:
                written = self._handle.write(view[done:])
            except OSError as error:
                self.error = error
                break
            if not written:
                self.error = OSError(errno.EIO, "the file took no bytes")
            done += written or 0
        return len(view)

    def truncate(self, size: int | None = None) -> int | None:
        if self.error is None:
            try:
                return self._handle.truncate(size)
            except OSError as error:
                self.error = error
        return size

    def __getattr__(self, name: str) -> Any:  # read, readinto, seek, tell, flush
        return getattr(self._handle, name)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C until the block ends (only the main thread ever gets KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda *received: held.append(received))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held and callable(previous):
        previous(*held[0])  # Python's default handler raises KeyboardInterrupt


@contextmanager
def hdf5_writer(path: str | Path) -> Iterator[h5py.File]:
    """A new HDF5 file at `path` (write it through `atomic.atomic_path`); a failed write raises
    its OSError (without a file name: the caller's atomic path names the output)."""
    with _interrupts_held(), open(path, "w+b", buffering=0) as handle:
        guard = _WriteGuard(handle)
        try:
            with h5py.File(guard, "w") as hf:
                yield hf
        finally:
            if guard.error is not None:
                raise guard.error  # the disk error, not what HDF5 made of it
