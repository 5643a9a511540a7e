"""Suite-wide set-up."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def python_ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler for the tests of interrupted writes: a shell that starts the
    suite in the background ignores SIGINT, and then no KeyboardInterrupt is ever raised."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
