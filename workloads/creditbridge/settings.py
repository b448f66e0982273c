"""Config keys of the credit-bridge workload, their defaults and checks.

A trial config is flat. Keys not listed here are rejected (a typo must not silently fall back to a
default). Defaults are the seed's main-run settings (spec credit-bridge.md); task-dependent
defaults (width, schedule, sizes) are filled in by :func:`resolve`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

METHODS = ("bp", "dfa", "fa", "sb", "cb")
CONDS = ("eT", "deltaL", "eT+proj", "deltaL+proj")
TASKS = ("synthetic", "cifar10")


@dataclass
class Settings:
    # --- what runs
    task: str = "synthetic"          # synthetic | cifar10
    method: str = "cb"               # bp | dfa | fa | sb | cb
    seed: int | None = None          # student seed (None: the trial's seed)
    # --- network
    depth: int = 4                   # L hidden blocks
    width: int | None = None         # d; synthetic 128, cifar10 512
    alpha: float = 1.0               # synthetic: phi_alpha(z) = (1-alpha) z + alpha tanh(z)
    # --- synthetic teacher-student data
    n_classes: int = 10
    n_train: int | None = None       # synthetic 20000; cifar10: 0 = every training image
    n_test: int | None = None        # synthetic 5000; cifar10: 0 = every test image
    teacher_seed: int = 0            # base seed of the teacher; mixed with (alpha, depth, width)
    # --- cifar10 data
    data: str = "auto"               # auto | real | standin
    standin_train: int = 10000
    standin_test: int = 2000
    # --- optimisation of the forward net
    epochs: int = 80                 # synthetic 80 (seed), cifar10 100 (seed)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_schedule: str | None = None   # constant | cosine; synthetic constant, cifar10 cosine
    credit_eps: float = 1e-6         # a <- a / (RMS(a) + credit_eps), per sample
    # --- credit models (SB predictor, CB value net) [PROPOSAL constants]
    cond: str = "eT"                 # conditioning code s: eT | deltaL | eT+proj | deltaL+proj
    tgw: float = 1.0                 # CB terminal gradient-matching weight
    gm_norm: str = "batch"           # batch: error relative to the target's RMS; unit: unit-RMS target
    wr: float = 0.2                  # CB DFA warm-up: fraction of training steps on DFA credit
    sb_wr: float = 0.0               # the same for SB (the seed names no warm-up for SB)
    bridge_k: int = 4                # K noisy next states in the bridge target
    bridge_sigma: float = 0.05       # their noise scale
    softmin_tau: float = 0.1         # temperature of the softmin over the K values
    ema_decay: float = 0.99          # slow target copy of the value net
    vnet_hidden: int = 256
    vnet_layers: int = 2             # hidden layers of the value net / predictor MLP
    vnet_lr: float = 1e-3
    time_dim: int = 32               # sinusoidal embedding of t_l = l / L
    proj_dim: int = 32               # fixed random projection of h_L for the "+proj" codes
    dfa_std: float | None = None     # std of DFA/FA feedback entries; None: 1/sqrt(C) (DFA), 1/sqrt(d) (FA)
    # --- metrics
    n_eval: int = 1024               # held-out samples for Gamma, rho, nudging
    rho_directions: int = 32         # M
    rho_eps: float = 1e-3            # epsilon
    nudge_etas: list[float] = field(default_factory=lambda: [0.003, 0.01])
    rho_reference: bool = True       # also measure rho of the true gradient on the same net
    track_every: int = 1             # epochs between Gamma checks (256 samples) in the history; 0 = off
    checkpoint_every: int = 1        # epochs between checkpoints

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SYNTHETIC_DEFAULTS = {"width": 128, "n_train": 20000, "n_test": 5000, "lr_schedule": "constant"}
CIFAR_DEFAULTS = {"width": 512, "n_train": 0, "n_test": 0, "lr_schedule": "cosine"}


def resolve(config: dict[str, Any]) -> Settings:
    """Validated settings from a flat trial config."""
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"creditbridge: unknown config keys {unknown} (known: {sorted(known)})")
    s = Settings(**{k: v for k, v in config.items()})
    if s.task not in TASKS:
        raise ValueError(f"creditbridge: task must be one of {TASKS} (got {s.task!r})")
    for k, v in (SYNTHETIC_DEFAULTS if s.task == "synthetic" else CIFAR_DEFAULTS).items():
        if getattr(s, k) is None:
            setattr(s, k, v)
    if s.method not in METHODS:
        raise ValueError(f"creditbridge: method must be one of {METHODS} (got {s.method!r})")
    if s.cond not in CONDS:
        raise ValueError(f"creditbridge: cond must be one of {CONDS} (got {s.cond!r})")
    if s.gm_norm not in ("batch", "unit"):
        raise ValueError(f"creditbridge: gm_norm must be batch or unit (got {s.gm_norm!r})")
    if s.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"creditbridge: lr_schedule must be constant or cosine (got {s.lr_schedule!r})")
    if s.data not in ("auto", "real", "standin"):
        raise ValueError(f"creditbridge: data must be auto, real or standin (got {s.data!r})")
    if s.depth < 1 or s.width < 1 or s.epochs < 1 or s.batch_size < 1:
        raise ValueError("creditbridge: depth, width, epochs and batch_size must be positive")
    if not 0.0 <= s.wr <= 1.0 or not 0.0 <= s.sb_wr <= 1.0:
        raise ValueError("creditbridge: wr and sb_wr are fractions in [0, 1]")
    if not 0.0 <= s.alpha <= 1.0:
        raise ValueError(f"creditbridge: alpha must lie in [0, 1] (got {s.alpha})")
    if isinstance(s.nudge_etas, (int, float)):
        s.nudge_etas = [float(s.nudge_etas)]
    s.nudge_etas = [float(e) for e in s.nudge_etas]
    return s


def eta_name(eta: float) -> str:
    """Metric-name fragment for a nudging step: 0.003 -> 'eta0p003' (no dots in column names)."""
    return "eta" + f"{eta:g}".replace(".", "p").replace("-", "m")
