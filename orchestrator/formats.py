"""Small formatting helpers that import nothing of the orchestrator, so that any module can use
them without an import running the wrong way: a duration for people (progress line, report,
lock messages) and the canonical JSON that trial ids and stage-cache keys hash."""
from __future__ import annotations

import json
from typing import Any


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
