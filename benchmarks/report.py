"""Every benchmark ends the same way: print its JSON, and write it where --out says."""
from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: str | None = None) -> int:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return 0
