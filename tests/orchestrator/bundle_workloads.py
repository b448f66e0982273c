"""Test-only workloads for bundles (``tests.orchestrator.bundle_workloads:Class``).

- Crashy: kills its own process on every try when ``crash`` is true, else finishes at once; one
  start marker per try (``marker_dir``).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from orchestrator import AnyParams


class Crashy:
    name = "crashy"
    version = "1"

    def run(self, config: AnyParams, ctx) -> dict[str, Any]:
        folder = Path(config.marker_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{ctx.trial_id}.{os.getpid()}.{uuid.uuid4().hex[:6]}.start").write_text(str(os.getpid()))
        if getattr(config, "crash", False):
            os._exit(23)
        ctx.report(0, loss=float(config.x))
        return {"loss": float(config.x), "pid": os.getpid()}
