"""`overnight ARGS` on the head node of a launcher cluster, for `ray submit`.

`ray submit CLUSTER.yaml SCRIPT -- ARGS` copies one script to the head node and runs it with the
head's Python, so this script only changes into the project checkout that the cluster file syncs
(~/overnight, or $OVERNIGHT_HOME) — study names then resolve against configs/studies/ there — and
hands its arguments to the installed CLI:

    ray submit --tmux configs/cluster/aws-gpu.yaml configs/cluster/overnight_run.py -- \\
        run transformer_grid --scale full --address auto --results s3://YOUR-BUCKET/overnight
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    home = Path(os.environ.get("OVERNIGHT_HOME", "~/overnight")).expanduser()
    if not (home / "configs").is_dir():
        print(f"overnight_run: error: no project checkout at {home} (set OVERNIGHT_HOME)", file=sys.stderr)
        return 2
    os.chdir(home)
    sys.path.insert(0, str(home))
    from orchestrator.cli import main as overnight

    return overnight(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
