"""A training script that knows nothing about overnight except four environment variables.

Gradient descent on f(w) = (w - target)^2 from w = 0; `--fail crash` exits with an error half-way
(first attempt only), `--fail nan` reports a NaN loss. Run it by hand:

    OVERNIGHT_CHECKPOINT_DIR=/tmp/ck OVERNIGHT_METRICS_FILE=/tmp/m.jsonl python train.py --lr 0.1

or as a sweep through `overnight run examples/quadratic/study.yaml --scale smoke`.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--target", type=float, default=3.0)
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--sleep_s", type=float, default=0.0)
parser.add_argument("--fail", choices=["none", "crash", "nan"], default="none")
parser.add_argument("--marker_dir", default="")
args = parser.parse_args()

checkpoint = Path(os.environ.get("OVERNIGHT_CHECKPOINT_DIR", ".")) / "state.json"
metrics_file = Path(os.environ.get("OVERNIGHT_METRICS_FILE", "metrics.jsonl"))
attempt = int(os.environ.get("OVERNIGHT_ATTEMPT", "1"))

# resume from the checkpoint overnight handed back, if any
state = json.loads(checkpoint.read_text()) if checkpoint.exists() else {"step": 0, "w": 0.0}
resumed_from = state["step"]
if args.marker_dir:  # for tests: which process ran, from which step
    Path(args.marker_dir).mkdir(parents=True, exist_ok=True)
    marker = Path(args.marker_dir) / f"{os.environ.get('OVERNIGHT_TRIAL_ID', 'local')}.{os.getpid()}.start"
    marker.write_text(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "resumed_from": resumed_from}))


def log(record):
    with metrics_file.open("a") as f:
        f.write(json.dumps(record) + "\n")


for step in range(state["step"], args.steps):
    time.sleep(args.sleep_s)
    grad = 2 * (state["w"] - args.target)
    state["w"] -= args.lr * grad
    loss = (state["w"] - args.target) ** 2
    if args.fail == "nan" and step == args.steps // 2:
        loss = math.nan
    if args.fail == "crash" and step == args.steps // 2 and attempt == 1:
        print(f"exploding at step {step}", file=sys.stderr)
        sys.exit(3)
    state["step"] = step + 1
    tmp = checkpoint.with_suffix(".tmp")  # write-then-rename: never half a checkpoint
    tmp.write_text(json.dumps(state))
    tmp.replace(checkpoint)
    log({"step": step, "loss": loss, "w": state["w"]})
    print(f"step {step} loss {loss:.6f}")

log({"step": args.steps, "loss": (state["w"] - args.target) ** 2 if args.fail != "nan" else math.nan,
     "w": state["w"], "resumed_from": resumed_from})
