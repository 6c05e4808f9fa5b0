"""One machine-readable contract for every command's `--json`: a single strict JSON envelope on stdout.

    {"command": "sample", "cfgdiff_version": "0.1.0", "ok": true,
     "inputs": {...}, "outputs": {...}, "settings": {...}, "results": ..., "provenance": {...}}

- `inputs`: the files and folders the command read (name -> path, or null);
- `outputs`: the files and folders it wrote or would write (name -> path, or null);
- `settings`: the resolved configuration (what the command did, with defaults filled in);
- `results`: the command's numbers (metrics, counts, timings); the command's own shape;
- `provenance`: hashes and versions that identify the inputs (checkpoint sha256, weights, ...).

Strict JSON: NaN and ±Inf become null (never the non-JSON tokens `NaN`/`Infinity`), tuples become lists,
paths become strings. Standard library only, so a command can emit it without importing torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cfgdiff import __version__

KEYS = ("command", "cfgdiff_version", "ok", "inputs", "outputs", "settings", "results", "provenance")


def strict(value: Any) -> Any:
    """`value` with every non-finite float replaced by None and paths/tuples/sets made JSON types."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(strict(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy/torch scalars
        return strict(value.item())
    return value


def envelope(
    command: str,
    *,
    inputs: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    results: Any = None,
    provenance: dict[str, Any] | None = None,
    ok: bool = True,
) -> dict[str, Any]:
    """The envelope as a dict (every key present; missing parts are empty objects or null)."""
    return strict({
        "command": command, "cfgdiff_version": __version__, "ok": ok,
        "inputs": inputs or {}, "outputs": outputs or {}, "settings": settings or {},
        "results": results, "provenance": provenance or {},
    })


def dumps(doc: dict[str, Any]) -> str:
    """Serialise strictly: `allow_nan=False`, so a non-finite number that slipped through is a bug, not output."""
    return json.dumps(strict(doc), indent=1, allow_nan=False)


def emit(command: str, **parts: Any) -> None:
    """Print the envelope of `command` as one JSON document on stdout."""
    print(dumps(envelope(command, **parts)), flush=True)
