"""A small character-level GPT, trained on tinyshakespeare, in the style of the well-known
single-file GPT training scripts. It knows nothing about any sweep tool.

Every setting below can be overridden on the command line as --key=value:

    python train.py --data_dir=../../../shared/data/tinyshakespeare --learning_rate=3e-3 --n_layer=2

It prints `step N: train loss X, val loss Y` every eval_interval steps and then saves
ckpt.pt (model, optimizer, step, RNG state) under out_dir. With --init_from=resume it continues
from out_dir/ckpt.pt exactly where that left off: a run stopped and resumed prints the same
losses as one that ran straight through.

The text is read from data_dir/input.txt; data_dir defaults to $OVERNIGHT_DATA_ROOT/tinyshakespeare.
"""
import ast
import math
import os
import sys
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

# -----------------------------------------------------------------------------
# default config values
out_dir = "out-char-gpt"
data_dir = ""            # a folder with input.txt; "" = $OVERNIGHT_DATA_ROOT/tinyshakespeare
init_from = "scratch"    # or "resume" (from out_dir/ckpt.pt)
eval_interval = 10
eval_iters = 8
max_iters = 40
batch_size = 16
block_size = 32
n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.0
learning_rate = 3e-3
weight_decay = 0.1
grad_clip = 1.0
seed = 1337
device = "cpu"
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, str))]
for arg in sys.argv[1:]:
    if not arg.startswith("--") or "=" not in arg:
        sys.exit(f"expected --key=value, got {arg!r}")
    key, val = arg[2:].split("=", 1)
    if key not in config_keys:
        sys.exit(f"unknown config key: {key}")
    try:
        attempt = ast.literal_eval(val)
    except (SyntaxError, ValueError):
        attempt = val
    default = globals()[key]
    if isinstance(default, float) and isinstance(attempt, int):
        attempt = float(attempt)
    if type(attempt) is not type(default):
        sys.exit(f"--{key}: expected a {type(default).__name__}, got {val!r}")
    globals()[key] = attempt
config = {k: globals()[k] for k in config_keys}
# -----------------------------------------------------------------------------

if not data_dir:
    root = os.environ.get("OVERNIGHT_DATA_ROOT")
    if not root:
        sys.exit("no data: pass --data_dir=DIR (a folder with input.txt, e.g. ../shared/data/tinyshakespeare) "
                 "or set OVERNIGHT_DATA_ROOT")
    data_dir = os.path.join(root, "tinyshakespeare")
input_path = os.path.join(data_dir, "input.txt")
if not os.path.isfile(input_path):
    sys.exit(f"no data: {input_path} does not exist (pass --data_dir=DIR, a folder with tinyshakespeare's input.txt)")
with open(input_path, encoding="utf-8") as f:
    text = f.read()
chars = sorted(set(text))
vocab_size = len(chars)
if text.isascii():
    lut = torch.zeros(128, dtype=torch.long)
    lut[torch.tensor([ord(c) for c in chars])] = torch.arange(vocab_size)
    data = lut[torch.frombuffer(bytearray(text.encode("ascii")), dtype=torch.uint8).long()]
else:
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
n = int(0.9 * len(data))
splits = {"train": data[:n], "val": data[n:]}

torch.manual_seed(seed)


def get_batch(split, generator=None):
    d = splits[split]
    ix = torch.randint(len(d) - block_size, (batch_size,), generator=generator)
    x = torch.stack([d[i:i + block_size] for i in ix])
    y = torch.stack([d[i + 1:i + 1 + block_size] for i in ix])
    return x.to(device), y.to(device)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(n_embd, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block() for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.ln_f(self.blocks(self.wte(idx) + self.wpe(pos)))
        logits = self.head(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class AdamW:
    """torch.optim.AdamW's update, written out: torch.optim imports torch._dynamo on first use,
    which takes seconds, longer than this whole run."""

    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8):
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            p.mul_(1 - self.lr * self.weight_decay)
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.t))

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def state_dict(self):
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, state):
        self.t = state["t"]
        for mine, saved in zip(self.m + self.v, state["m"] + state["v"]):
            mine.copy_(saved)


model = GPT().to(device)
optimizer = AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
iter_num = 0
ckpt_path = os.path.join(out_dir, "ckpt.pt")
if init_from == "resume":
    print(f"Resuming training from {ckpt_path}")
    checkpoint = torch.load(ckpt_path, map_location=device)
    for k in ("n_layer", "n_head", "n_embd", "block_size"):
        if checkpoint["config"][k] != config[k]:
            sys.exit(f"{ckpt_path} has {k}={checkpoint['config'][k]}, this run {k}={config[k]}")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    iter_num = checkpoint["iter_num"]
    torch.set_rng_state(checkpoint["rng_state"])
    print(f"resumed at step {iter_num}")
elif init_from != "scratch":
    sys.exit(f"init_from must be scratch or resume, got {init_from!r}")
print(f"{sum(p.numel() for p in model.parameters())} parameters, vocab {vocab_size}, {torch.get_num_threads()} thread(s)")


@torch.no_grad()
def estimate_loss():
    # the same eval batches at every eval (their own generator): the training RNG is untouched
    out = {}
    model.eval()
    for split in ("train", "val"):
        g = torch.Generator().manual_seed(seed + 1)
        out[split] = torch.stack([model(*get_batch(split, g)) for _ in range(eval_iters)]).mean().item()
    model.train()
    return out


t0 = time.time()
while True:
    if iter_num % eval_interval == 0 or iter_num == max_iters:
        losses = estimate_loss()
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        os.makedirs(out_dir, exist_ok=True)
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter_num": iter_num,
                      "val_loss": losses["val"], "config": config, "rng_state": torch.get_rng_state()}
        print(f"saving checkpoint to {out_dir}")
        torch.save(checkpoint, ckpt_path + ".tmp")   # write, then rename: never half a checkpoint
        os.replace(ckpt_path + ".tmp", ckpt_path)
    if iter_num >= max_iters:
        break
    loss = model(*get_batch("train"))
    if not math.isfinite(loss.item()):
        sys.exit(f"loss is {loss.item()} at step {iter_num}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    iter_num += 1
print(f"done in {time.time() - t0:.1f}s")
