"""Learned correctors for quantized activations of an MLP on 100-D spirals: one run of the seed-000
Hydra sweep, as a plain script (numpy + torch, nothing else).

One run:
  1. data: two interleaved spirals, noised, shuffled, split 80/20, embedded in `input_dim` dimensions;
  2. float training: an MLP, depth x [Linear(width) + ReLU] then Linear(width -> 2), full-batch Adam
     on cross-entropy;                                                   -> checkpoint float.pt
  3. quantization: the output of every hidden ReLU is fake-quantized to `bits` bits (symmetric,
     per tensor, scale = absmax over the train set / qmax, fixed once on the float model);
  4. correction: small correctors at every `correct_every`-th point add C(E), E = the quantization
     error accumulated since the previous corrector; only they train (full-batch Adam, MSE of the
     corrected logits to the float logits), the MLP stays frozen;      -> checkpoint correction.pt
  5. the row: test accuracy float / quantized / corrected / oracle and the share of the
     quantization gap the correctors recover.

The method is docs/studies/quantization-correction.md ("Classification", protocol hydra); the
numbers equal those of the built-in workload `quantcorr.classification` for the same parameters.

Environment (set by `overnight run`, all optional by hand):
  OVERNIGHT_SEED            the seed when --seed is not given
  OVERNIGHT_CHECKPOINT_DIR  where float.pt and correction.pt go; a run finding them there resumes
  OVERNIGHT_METRICS_FILE    JSON lines: history records ({"step", "phase", "loss"}), then the row
  OVERNIGHT_DEVICE          cpu (default) or cuda

By hand:
    OVERNIGHT_CHECKPOINT_DIR=/tmp/ck OVERNIGHT_METRICS_FILE=/tmp/m.jsonl \\
        python train.py --seed 42 --bits 2 --width 32 --depth 4 --float_steps 20 --correction_steps 15
As a sweep: `overnight run examples/spirals_hydra/study.yaml --scale smoke`.
"""
import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# ----------------------------------------------------------------------------- configuration
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--seed", type=int, default=None, help="run seed (default: $OVERNIGHT_SEED, else 0)")
# data
parser.add_argument("--n_samples", type=int, default=2000, help="spiral points, split 80/20")
parser.add_argument("--noise", type=float, default=0.3, help="N(0, (0.1 noise)^2) per 2-D coordinate")
parser.add_argument("--turns", type=float, default=3.0, help="turns of each spiral arm")
parser.add_argument("--input_dim", type=int, default=100, help="dimension of the random affine embedding")
# model and float training
parser.add_argument("--width", type=int, default=64)
parser.add_argument("--depth", type=int, default=6)
parser.add_argument("--float_steps", type=int, default=1000)
parser.add_argument("--float_lr", type=float, default=1e-3)
# quantization and correction
parser.add_argument("--bits", type=int, default=4)
parser.add_argument("--correct_every", type=int, default=1, help="a corrector at point j when (j+1) % N == 0")
parser.add_argument("--correction_hidden", type=int, default=0, help="0: affine d->d; h: d->h, ReLU, h->d")
parser.add_argument("--correction_init", choices=["default", "zero"], default="default")
parser.add_argument("--correction_steps", type=int, default=600)
parser.add_argument("--correction_lr", type=float, default=1e-4)
parser.add_argument("--protocol", choices=["hydra"], default="hydra", help="only hydra here")
# the row
parser.add_argument("--guard", choices=["hydra", "lambda"], default="hydra", help="recovery when the gap <= 0")
parser.add_argument("--reliable_gap_rel", type=float, default=0.005)
args = parser.parse_args()

seed = args.seed if args.seed is not None else int(os.environ.get("OVERNIGHT_SEED", "0"))
device = os.environ.get("OVERNIGHT_DEVICE", "cpu")
checkpoint_dir = Path(os.environ.get("OVERNIGHT_CHECKPOINT_DIR", "checkpoint"))
metrics_file = Path(os.environ.get("OVERNIGHT_METRICS_FILE", "metrics.jsonl"))
checkpoint_dir.mkdir(parents=True, exist_ok=True)
config = {**vars(args), "seed": seed}  # a checkpoint of another configuration is never resumed
started = time.perf_counter()
# Results are reproducible bit for bit for a given thread count (more threads may sum in another order)
print(f"seed {seed}, device {device}, {torch.get_num_threads()} torch thread(s)", flush=True)


def log(record):
    """One JSON line of the metrics file: a history step, or (the last line) the row."""
    with metrics_file.open("a") as f:
        f.write(json.dumps(record) + "\n")


def save(name, state):
    """Write-then-rename, so a kill never leaves half a checkpoint (the temporary file's name
    starts with a dot: overnight does not save those)."""
    tmp = checkpoint_dir / f".{name}.tmp"
    torch.save({"config": config, **state}, tmp)
    os.replace(tmp, checkpoint_dir / name)


def load(name):
    """The checkpoint `name` of this very configuration, or None."""
    path = checkpoint_dir / name
    if not path.exists():
        return None
    state = torch.load(path, map_location=device)
    return state if state["config"] == config else None


def keep_history(phases):
    """Keep only the history records of `phases` (those done and checkpointed): a restarted run
    repeats the others, and would log their steps twice."""
    if not metrics_file.exists():
        return
    kept = []
    for line in metrics_file.read_text().splitlines():
        try:
            if json.loads(line).get("phase") in phases:
                kept.append(line + "\n")
        except json.JSONDecodeError:  # a line torn by a kill
            pass
    tmp = metrics_file.with_name(metrics_file.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, metrics_file)


# resume: what a previous run of this configuration finished, if anything
float_phase, correction_phase = load("float.pt"), load("correction.pt")
keep_history(set() if float_phase is None else {"float"} if correction_phase is None else {"float", "correction"})


# ----------------------------------------------------------------------------- data
def make_spirals(n, noise, turns, dim, seed):
    """Two spirals (class 1 = class 0 rotated by pi), noised, shuffled, split 80/20, embedded by
    x W + b. numpy draws, in this order: the noise and the shuffle from RandomState(seed), the
    split from a fresh RandomState(seed) (what sklearn's train_test_split(test_size=0.2,
    random_state=seed) does), W then b from another fresh RandomState(seed)."""
    rs = np.random.RandomState(seed)
    m = n // 2
    theta = np.linspace(0.0, 2 * np.pi * turns, m)
    r = theta / (2 * np.pi * turns)
    arm = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    X = np.concatenate([arm, -arm])
    y = np.concatenate([np.zeros(m, dtype=np.int64), np.ones(m, dtype=np.int64)])
    X = X + rs.normal(0.0, 0.1 * noise, size=X.shape)
    shuffle = rs.permutation(len(X))
    X, y = X[shuffle], y[shuffle]
    n_test = math.ceil(0.2 * len(X))  # sklearn's count, float product included
    split = np.random.RandomState(seed).permutation(len(X))
    test, train = split[:n_test], split[n_test:]
    emb = np.random.RandomState(seed)
    W = emb.randn(2, dim) / np.sqrt(2.0)
    b = 0.1 * emb.randn(dim)
    embed = lambda a: torch.from_numpy((a @ W + b).astype(np.float32)).to(device)  # noqa: E731
    return embed(X[train]), torch.from_numpy(y[train]).to(device), embed(X[test]), torch.from_numpy(y[test]).to(device)


train_x, train_y, test_x, test_y = make_spirals(args.n_samples, args.noise, args.turns, args.input_dim, seed)


# ----------------------------------------------------------------------------- model
class MLP(nn.Module):
    def __init__(self, in_dim, width, depth, classes=2):
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(in_dim if i == 0 else width, width) for i in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.head(x)


def accuracy(logits, y):
    return float((logits.argmax(1) == y).float().mean())


# ----------------------------------------------------------------------------- float training
torch.manual_seed(seed)
model = MLP(args.input_dim, args.width, args.depth).to(device)  # init draws from the seeded torch RNG
resumed_from = "start"
if float_phase is not None:
    model.load_state_dict(float_phase["model"])
    resumed_from = "float"
    print("resumed: float training done (float.pt), skipping it", flush=True)
else:
    opt = torch.optim.Adam(model.parameters(), lr=args.float_lr)
    for step in range(1, args.float_steps + 1):
        loss = F.cross_entropy(model(train_x), train_y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss = float(loss.detach())
        if not math.isfinite(loss):  # a non-finite metric in the last record: the trial diverged
            log({"diverged_step": step, "float_loss": loss})
            raise SystemExit(0)
        if step % 100 == 0 or step == args.float_steps:
            log({"step": step, "phase": "float", "loss": loss})
            print(f"float step {step} loss {loss:.6f}", flush=True)
    save("float.pt", {"model": model.state_dict()})
float_phase_s = time.perf_counter() - started
model.eval()
for p in model.parameters():
    p.requires_grad_(False)  # from here on only the correctors train


# ----------------------------------------------------------------------------- quantization
QMIN, QMAX = -(2 ** (args.bits - 1)), 2 ** (args.bits - 1) - 1  # 2 bits: [-2, 1], 4 bits: [-8, 7]


class RoundSTE(torch.autograd.Function):
    """round (half to even) forward, gradient passed straight through."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant(x, scale):
    """scale * clamp(round(x / scale), qmin, qmax); the clamp after the STE gives saturated
    elements zero gradient."""
    return scale * torch.clamp(RoundSTE.apply(x / scale), QMIN, QMAX)


class Corrector(nn.Module):
    """Predicts an additive fix from the accumulated error E: W E + b, or d -> h, ReLU, h -> d."""

    def __init__(self, dim, hidden, init):
        super().__init__()
        self.net = nn.Linear(dim, dim) if hidden == 0 else nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        if init == "zero":  # starts as a no-op: corrected == quantized
            last = self.net if hidden == 0 else self.net[2]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, err):
        return self.net(err)


def forward(h0, scales=None, correctors=None, substitute=None):
    """The MLP from its first layer's output h0 (the backbone is frozen: computed once). Without
    `scales` a float pass; with them every hidden activation x is fake-quantized, and at a
    corrector's point Q(x) + C(E) goes on, E = sum of x - Q(x) since the previous corrector.
    `substitute` {point: activation} replaces the value at those points (the oracle).
    Returns the logits and the activation after every point."""
    correctors = correctors or {}
    substitute = substitute or {}
    x, err_sum, acts = h0, None, []
    for j, layer in enumerate(model.hidden):
        x = torch.relu(x if j == 0 else layer(x))
        if scales is not None:
            xq = fake_quant(x, scales[j])
            err_sum = (x - xq) if err_sum is None else err_sum + (x - xq)
            if str(j) in correctors:
                xq = xq + correctors[str(j)](err_sum)
                err_sum = None
            x = substitute.get(j, xq)
        acts.append(x)
    return model.head(x), acts


with torch.no_grad():
    h0_train, h0_test = model.hidden[0](train_x), model.hidden[0](test_x)
    _, float_acts = forward(h0_train)
    # scale per point from the float model on the whole train set, then frozen
    absmax = [float(a.abs().max()) if a.numel() else 0.0 for a in float_acts]
    scales = [m / QMAX if m > 0 else 1.0 for m in absmax]

    points = [j for j in range(args.depth) if (j + 1) % args.correct_every == 0]  # none: the baseline
    acc_float = accuracy(forward(h0_test)[0], test_y)
    acc_quant = accuracy(forward(h0_test, scales)[0], test_y)
    acc_oracle = acc_quant
    if points:  # the float activation at the corrector points: an upper bound for correction there
        _, test_acts = forward(h0_test)
        acc_oracle = accuracy(forward(h0_test, scales, substitute={j: test_acts[j] for j in points})[0], test_y)


# ----------------------------------------------------------------------------- correction
torch.manual_seed(seed + 7919)  # the correctors' init has its own stream
correctors = nn.ModuleDict({str(j): Corrector(args.width, args.correction_hidden, args.correction_init)
                            for j in points}).to(device)
final_loss = None  # no correctors: no loss (null, not NaN: a NaN would mark the run diverged)
if correction_phase is not None:
    correctors.load_state_dict(correction_phase["correctors"])
    final_loss = correction_phase["final_loss"]
    resumed_from = "correction"
    print("resumed: correction done (correction.pt), skipping it", flush=True)
elif points:
    with torch.no_grad():
        teacher = forward(h0_train)[0]  # the float logits
    opt = torch.optim.Adam(correctors.parameters(), lr=args.correction_lr)
    for step in range(1, args.correction_steps + 1):
        loss = F.mse_loss(forward(h0_train, scales, correctors)[0], teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        final_loss = float(loss.detach())
        if not math.isfinite(final_loss):
            log({"diverged_step": step, "correction_final_loss": final_loss})
            raise SystemExit(0)
        if step % 50 == 0:
            log({"step": step, "phase": "correction", "loss": final_loss})
            print(f"correction step {step} loss {final_loss:.6f}", flush=True)
    save("correction.pt", {"correctors": correctors.state_dict(), "final_loss": final_loss})

acc_corrected = acc_quant  # without correctors corrected = quantized
if points:
    with torch.no_grad():
        acc_corrected = accuracy(forward(h0_test, scales, correctors)[0], test_y)


# ----------------------------------------------------------------------------- the row
f, q, c = acc_float, acc_quant, acc_corrected
gap = f - q  # how much quantization hurt (accuracy: higher is better)
if not points:
    recovery = 0.0
elif args.guard == "hydra":
    recovery = 0.0 if gap <= 0 else 100.0 * (c - q) / gap
else:  # lambda: only an exactly zero gap is guarded, a negative one flips the sign
    recovery = 0.0 if gap == 0 else 100.0 * (c - q) / gap
row = {
    "acc_float": f, "acc_quant": q, "acc_corrected": c, "acc_oracle": acc_oracle,
    "f": f, "q": q, "c": c, "gap": gap, "gap_abs": abs(q - f), "recovery_pct": recovery,
    "recovery_reliable": bool(math.isfinite(gap) and gap >= args.reliable_gap_rel * max(abs(f), 1e-12)),
    "num_correction_layers": len(points), "num_quant_points": args.depth,
    "correction_final_loss": final_loss, "resumed_from": resumed_from,
    "float_phase_s": float_phase_s, "total_s": time.perf_counter() - started,
}
log(row)
print(f"acc float {f:.4f} quantized {q:.4f} corrected {c:.4f} oracle {acc_oracle:.4f} recovery {recovery:.1f}%")
