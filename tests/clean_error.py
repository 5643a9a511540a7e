"""What the bad-input catalogues check of a failed command: its one error line and no new files."""

from __future__ import annotations

import re
from pathlib import Path

BAR = re.compile(r"^[\w -]+:\s+\d+%\|")  # a tqdm progress-bar frame


def files(root: Path) -> set[Path]:
    """Every file under root but the data index caches (written when data are read, not outputs)."""
    return {p for p in root.rglob("*") if p.is_file() and "index" not in p.name and "cache" not in p.parts}


def the_line(err: str) -> str:
    """The single non-progress-bar line of stderr, with no traceback."""
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not BAR.match(line)]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
