"""What DFA's Gamma and rho look like when the feedback matrices are not the ones the net was trained
with (the protocol warns that Gamma is wrong unless B is saved with the checkpoint).

Trains one DFA trial, then measures the credit B e_T of the trained B and of freshly drawn B':

    .venv/bin/python -m workloads.creditbridge.probe '{"alpha": 1.0, "depth": 4, "epochs": 15, "n_train": 4096}'
"""
from __future__ import annotations

import json
import sys

import torch

from orchestrator import LocalContext

from .credit import Batch, DFACredit
from .metrics import evaluate_credit, layer_mean
from .params import resolve
from .train import Trainer, load_task


def redrawn_b(config: dict, seed: int = 0, draws: int = 3, n_eval: int = 512) -> dict[str, float]:
    cfg = resolve({**config, "method": "dfa", "seed": seed})
    trainer = Trainer(cfg, seed, load_task(cfg, LocalContext(), seed), "cpu")
    while trainer.epoch < cfg.epochs:
        trainer.train_epoch()
    hs, grads, credits, y = trainer.credit_on(n_eval)
    layers = list(range(1, cfg.depth + 1))
    kept = evaluate_credit(trainer.net, hs, grads, credits, y, layers, seed=seed)
    out = {"gamma_trained_B": layer_mean(kept, "gamma"), "rho_trained_B": layer_mean(kept, "rho")}
    g_new, r_new = [], []
    for k in range(draws):
        fresh = DFACredit(cfg.width, cfg.depth, cfg.n_classes, torch.Generator().manual_seed(10_000 + k))
        rows = evaluate_credit(trainer.net, hs, grads, fresh.credits(trainer.net, Batch.of(trainer.net, hs[0], y, hs)),
                               y, layers, seed=seed)
        g_new.append(layer_mean(rows, "gamma"))
        r_new.append(layer_mean(rows, "rho"))
    out.update(gamma_redrawn_B=sum(g_new) / draws, rho_redrawn_B=sum(r_new) / draws,
               gamma_redrawn_B_max_abs=max(abs(v) for v in g_new))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(json.dumps({k: round(v, 4) for k, v in redrawn_b(config).items()}))
