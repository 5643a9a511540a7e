"""Short content digests: the names of cached artefacts, resume units and provenance hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(value: Any, length: int = 12) -> str:
    """The first `length` hex digits of the SHA-256 of `value` as canonical JSON (sorted keys;
    values JSON cannot hold are written with str())."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]
