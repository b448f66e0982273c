"""Vectorised trials of the transformer task (docs/studies/quantization-correction.md,
'Vectorised trials'): the members of a group run as one batched computation
(workloads.substrate.vectorised) and each gets the row, history and checkpoints its own ``run``
would have given it.

A group is a set of trials whose configs differ only in ``seed`` (hydra and grid protocols: the
243-run grid's three seeds) or in ``seed`` and ``lam`` (lambda protocol). Its phases are those of
``transformer.run``, each batched:

  float       one backbone per distinct stage key (one per seed), trained together; the stage cache
              (or, with it off, each member's checkpoint) is used exactly as by ``run``: with the
              cache on, the builds hold the cache's per-key locks, taken in one fixed order
  baselines   calibration and the float / quantized-only test CE, once per distinct backbone
  correction  every member's correctors, trained together by the member's protocol
  corrected   the corrected test CE of every member

Each member's checkpoint holds what that member needs to resume alone through ``run`` (its float
progress when it builds a backbone, its corrector epochs), and a group resumes from its members'
checkpoints (members at different epochs train in sub-batches, one per epoch). A member whose
training diverges gets the ``Diverged`` its ``run`` raises; the others go on. Times in a member's
row (``float_phase_s``, ``total_s``, ...) are the group's divided by its size.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import torch

from workloads.substrate.char_transformer import CharData, load_char_data
from workloads.substrate.correction import FloatTap, QuantTap, build_correctors, calibrated_scales, corrector_keys
from workloads.substrate.lambda_schedule import CorrectorQat
from workloads.substrate.loops import Batches
from workloads.substrate.rows import PhaseClock
from workloads.substrate.stages import Checkpointer, trial_checkpoint, trial_seed
from workloads.substrate.vectorised import (BatchedCharTransformer, BatchedCorrectors, Dropout, MemberCalibrator,
                                            MemberRNG, Stack, Unit, lm_losses, mean_ce_members, mse_losses,
                                            record_losses, step_members, train_epochs_members)

from .params import (TRANSFORMER_FOLDED, TRANSFORMER_PROTOCOL_DEFAULTS, TransformerParams, transformer_group_key,
                     with_protocol_defaults)
from .transformer import backbone_recipe, transformer_row

class _Backbone:
    """One distinct float backbone of the group and the members that use it."""

    def __init__(self, key: dict, recipe, users: list[int]):
        self.key, self.recipe, self.users = key, recipe, users
        self.kjson = json.dumps(key, sort_keys=True, default=str)
        self.built: dict | None = None
        self.error: BaseException | None = None

    @property
    def owner(self) -> int:
        return self.users[0]


def run_group(cfgs: Sequence[dict], ctxs: Sequence) -> list[dict | BaseException]:
    """The members' rows (or exceptions), in order; ``cfgs`` are validated TransformerParams configs
    with equal ``group_key``. An error of the batched computation itself (not of one member) is
    every unfinished member's error."""
    if len(cfgs) != len(ctxs):
        raise ValueError(f"run_group: {len(cfgs)} configs but {len(ctxs)} contexts")
    if len({transformer_group_key(c) for c in cfgs}) != 1:
        raise ValueError("run_group: the configs are not one group (they differ in more than "
                         f"{TRANSFORMER_FOLDED[cfgs[0]['protocol']]})")
    results: list[Any] = [None] * len(cfgs)
    try:
        _run_group(cfgs, ctxs, results)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: the members fail (and are retried) one by one
        results = [e if r is None else r for r in results]
    return results


def _run_group(cfgs: Sequence[dict], ctxs: Sequence, results: list) -> None:
    M = len(cfgs)
    clock = PhaseClock()
    ps = [with_protocol_defaults(TRANSFORMER_PROTOCOL_DEFAULTS[c["protocol"]], c) for c in cfgs]
    p0, ctx0 = ps[0], ctxs[0]
    device = ctx0.device
    seeds = [trial_seed(p, ctx) for p, ctx in zip(ps, ctxs)]
    data = load_char_data(p0, ctx0, test_limit=p0["eval_sequences"])
    recipes = [backbone_recipe(p, s) for p, s in zip(ps, seeds)]
    keys = [r.stage_key(data, device) for r in recipes]
    ckpts = [trial_checkpoint(ctx, TransformerParams, p, k) for ctx, p, k in zip(ctxs, ps, keys)]

    backbones: dict[str, _Backbone] = {}
    for i, (k, r) in enumerate(zip(keys, recipes)):
        b = _Backbone(k, r, [])
        backbones.setdefault(b.kjson, b).users.append(i)
    float_phase(list(backbones.values()), data, p0, ctxs, ckpts, device)
    clock.mark("float")
    for b in backbones.values():
        for i in b.users:
            if b.error is not None:
                results[i] = b.error
    alive_b = [b for b in backbones.values() if b.error is None]
    if alive_b:
        _after_float(alive_b, data, ps, seeds, ctxs, ckpts, device, results, clock)
    assert all(r is not None for r in results), f"run_group: {results.count(None)} of {M} members without a result"


# -------------------------------------------------------------------------------- float phase
def float_phase(backbones: list[_Backbone], data: CharData, p0: dict, ctxs, ckpts: list[Checkpointer], device) -> None:
    """Every backbone's ``built`` ({"model": bytes, "order": tensor}) or ``error``, as
    ``char_transformer.trained_backbone`` / ``stages.staged`` would get it for its members."""
    if p0["stage_cache"]:
        # Nested builds: the stage of the k-th key (in a fixed order) is asked inside the build of
        # the (k-1)-th missing one, so all the missing backbones are trained together while their
        # cache locks are held (another trial waits instead of training them again).
        order = sorted(backbones, key=lambda b: b.kjson)
        missing: list[_Backbone] = []

        def resolve(pos: int) -> None:
            if pos == len(order):
                try:
                    train_backbones(missing, data, ctxs, ckpts, device, cache=True)
                except Exception as e:  # noqa: BLE001 - the batch failed: every missing backbone did
                    for m in missing:
                        if m.built is None and m.error is None:
                            m.error = e
                return
            b, called = order[pos], False

            def build() -> dict:
                nonlocal called
                called = True
                missing.append(b)
                resolve(pos + 1)
                if b.error is not None:
                    raise b.error  # nothing is stored under this key
                if b.built is None:
                    raise RuntimeError("backbone not built")
                return b.built

            try:
                b.built = ctxs[b.owner].stage(b.key, build)
            except Exception as e:  # noqa: BLE001 - this backbone's members fail, the others go on
                b.error = b.error or e
            if not called:
                resolve(pos + 1)

        resolve(0)
        for ck in ckpts:
            ck.drop("float_progress")
        return
    for b in backbones:
        b.built = next((ckpts[i].get("float") for i in b.users if ckpts[i].get("float") is not None), None)
    train_backbones([b for b in backbones if b.built is None], data, ctxs, ckpts, device, cache=False)
    for b in backbones:
        if b.built is not None:
            for i in b.users:
                if ckpts[i].get("float") is None:
                    ckpts[i].drop("float_progress")
                    ckpts[i].put("float", b.built)


def train_backbones(backbones: list[_Backbone], data: CharData, ctxs, ckpts, device, *, cache: bool) -> None:
    """``char_transformer._train_backbone`` for several backbones at once. With the stage cache on,
    the owner (first user) reports and checkpoints the build, as the trial holding the cache lock
    would; with it off every user does (each would have trained its own)."""
    if not backbones:
        return
    units = [Unit(report_to=[ctxs[i] for i in (b.users[:1] if cache else b.users)],
                  ckpts=[ckpts[i] for i in (b.users[:1] if cache else b.users)]) for b in backbones]
    progress = []
    for b in backbones:  # the furthest progress any user saved
        found = [ckpts[i].get("float_progress") for i in b.users]
        found = [f for f in found if f is not None]
        progress.append(max(found, key=lambda f: f["epoch"]) if found else None)
    by_start: dict[int, list[int]] = {}
    for j, pr in enumerate(progress):
        by_start.setdefault(pr["epoch"] if pr else 0, []).append(j)
    for idx in by_start.values():
        _train_backbone_batch([backbones[j] for j in idx], [units[j] for j in idx],
                              [progress[j] for j in idx], data, device)


def _train_backbone_batch(backbones, units, progress, data: CharData, device) -> None:
    r0 = backbones[0].recipe
    states, rng_states = [], []
    for b in backbones:  # the unbatched init: manual_seed(seed), then the model
        torch.manual_seed(b.recipe.seed)
        states.append(b.recipe.new_model(data.vocab_size).state_dict())
        rng_states.append(torch.get_rng_state())
    stack = Stack.of(states, device, requires_grad=True)
    opt = r0.new_optimizer(stack.params())
    batches = [r0.new_batches(len(data.train_x), device) for _ in backbones]
    rng = MemberRNG(rng_states)
    model = BatchedCharTransformer(stack, r0.n_layers, r0.n_heads)
    drop = Dropout(r0.dropout, rng, exact=_exact(device))
    resumed = progress if all(pr is not None for pr in progress) else None
    train_epochs_members(units, stack, opt, batches, rng, r0.epochs,
                         lambda idx: lm_losses(model(data.train_x[idx], drop=drop), data.train_y[idx]),
                         phase="float", clip=r0.grad_clip, progress=resumed)
    for k, (b, u) in enumerate(zip(backbones, units)):
        if u.error is not None:
            b.error = u.error
        else:
            b.built = {"model": stack.member_bytes(k), "order": batches[k].order}


def _exact(device) -> bool:
    """Whether dropout masks can be drawn as the unbatched trial draws them (CPU only)."""
    return torch.device(device).type == "cpu"


# -------------------------------------------------------------------------------- after the float phase
def _after_float(backbones: list[_Backbone], data: CharData, ps, seeds, ctxs, ckpts, device, results, clock) -> None:
    p0 = ps[0]
    members = sorted(i for b in backbones for i in b.users)
    bix = {i: j for j, b in enumerate(backbones) for i in b.users}
    of = [bix[i] for i in members]   # each member's backbone
    bstack = Stack.of_bytes([b.built["model"] for b in backbones], device)
    orders = [b.built["order"] for b in backbones]
    scales_b, losses_b = _baselines(BatchedCharTransformer(bstack, p0["n_layers"], p0["n_heads"]), data, p0, orders,
                                    device)
    model = BatchedCharTransformer(bstack.select(of), p0["n_layers"], p0["n_heads"])
    del bstack
    scales = {key: v[of] for key, v in scales_b.items()}
    ckeys = corrector_keys(model.points, p0["correct_every"])
    final, loss_c = [float("nan")] * len(members), [None] * len(members)
    if ckeys:
        units = [Unit(report_to=[ctxs[i]], ckpts=[ckpts[i]]) for i in members]
        sub = _Members(members, of, orders, [seeds[i] for i in members], [ps[i] for i in members], units)
        corr = _member_correctors(model, p0, sub, ckeys, device)
        final = PROTOCOLS[p0["protocol"]](model, corr, data, scales, sub, device)
        for k, u in enumerate(units):
            if u.error is not None:
                results[members[k]] = u.error
        loss_c = mean_ce_members(model, data.test_x, data.test_y, lambda: QuantTap(p0["bits"], scales, corr))
    clock_share = clock.share(1.0 / len(ctxs))
    for k, i in enumerate(members):
        if results[i] is not None:
            continue
        loss_f, loss_q_ok, loss_q_legacy = (losses[of[k]] for losses in losses_b)
        lq = loss_q_legacy if ps[i]["legacy_prenorm_residual_bug"] else loss_q_ok
        try:
            results[i] = transformer_row(
                ps[i], data, n_points=len(model.points), n_correctors=len(ckeys), loss_f=loss_f, loss_q=lq,
                loss_c=lq if loss_c[k] is None else loss_c[k], final_loss=final[k], loss_q_ok=loss_q_ok,
                loss_q_legacy=loss_q_legacy, clock=clock_share)
        except Exception as e:  # noqa: BLE001 - Diverged (non-finite evaluation), as run raises it
            results[i] = e


def _baselines(bmodel: BatchedCharTransformer, data: CharData, p0: dict, orders, device) -> tuple[dict, tuple]:
    """Once per distinct backbone: the calibrated scales (per point, (B, 1, 1, 1)) and the
    test CE of ``char_transformer.quantized_baselines`` (float, quantized, quantized with the
    legacy residual), each a list over the backbones."""
    bits = p0["bits"]
    calib = torch.stack([data.train_x[o[: p0["calib_sequences"]].to(device)] for o in orders])
    scales = calibrated_scales(bmodel, calib, bits, MemberCalibrator())
    losses = (mean_ce_members(bmodel, data.test_x, data.test_y, lambda: None),
              mean_ce_members(bmodel, data.test_x, data.test_y, lambda: QuantTap(bits, scales)),
              mean_ce_members(bmodel, data.test_x, data.test_y, lambda: QuantTap(bits, scales, legacy_residual=True)))
    return scales, losses


def _member_correctors(model: BatchedCharTransformer, p0: dict, m: "_Members", keys: list[str],
                       device) -> BatchedCorrectors:
    """Every member's correctors, initialised as its ``run`` initialises them (from its own seed)."""
    states = [build_correctors(model.points, p0["correct_every"], p0["correction_hidden"], p0["correction_init"],
                               seed, "cpu").state_dict() for seed in m.seeds]
    return BatchedCorrectors(Stack.of(states, device, requires_grad=True), keys, p0["correction_hidden"])


class _Members:
    """The members of the correction phase (positions k = 0..K-1 of the batched tensors)."""

    def __init__(self, index, backbone_of, orders, seeds, ps, units):
        self.index, self.backbone_of, self.orders = index, backbone_of, orders
        self.seeds, self.ps, self.units = seeds, ps, units

    def order(self, k: int) -> torch.Tensor:
        return self.orders[self.backbone_of[k]]

    def __len__(self) -> int:
        return len(self.index)


# -------------------------------------------------------------------------------- protocols
def hydra(model, corr, data, scales, m: _Members, device) -> list[float]:
    """``transformer.hydra``: correctors distilled on the float logits, teacher in train mode."""
    bits = m.ps[0]["bits"]

    def loss(model, corr, scales, x, y, drop):
        student = model(x, QuantTap(bits, scales, corr), drop)  # the student's masks first
        with torch.no_grad():
            teacher = model(x, None, drop)
        return mse_losses(student, teacher)

    return _corrector_epochs(model, corr, data, scales, m, device, loss)


def grid(model, corr, data, scales, m: _Members, device) -> list[float]:
    """``transformer.grid``: correctors trained with CE on the next-character labels."""
    bits = m.ps[0]["bits"]
    return _corrector_epochs(model, corr, data, scales, m, device, lambda model, corr, scales, x, y, drop:
                             lm_losses(model(x, QuantTap(bits, scales, corr), drop), y))


def _corrector_epochs(model, corr, data: CharData, scales, m: _Members, device, loss_fn) -> list[float]:
    """``transformer._corrector_epochs`` for every member (backbone in train mode, dropout on): each
    resumes from its own "correction_progress"; members at different epochs train in separate
    sub-batches. ``corr`` holds the trained correctors afterwards."""
    p0, K = m.ps[0], len(m)
    subsets = None
    if p0["correction_sequences"]:  # a subset of each member's last float order
        subsets = torch.stack([m.order(k)[: p0["correction_sequences"]].to(device) for k in range(K)])
    n = subsets.shape[1] if subsets is not None else len(data.train_x)
    progress = [u.ckpts[0].get("correction_progress") for u in m.units]
    by_start: dict[int, list[int]] = {}
    for k, pr in enumerate(progress):
        by_start.setdefault(pr["epoch"] if pr else 0, []).append(k)
    final = [float("nan")] * K
    for ks in by_start.values():
        whole = len(ks) == K
        sub_corr = corr if whole else corr.of_members(ks)
        sub_model = model if whole else BatchedCharTransformer(model.P.select(ks), model.n_layers, model.n_heads)
        sub_scales = scales if whole else {key: v[ks] for key, v in scales.items()}
        sub_subsets = None if subsets is None else subsets[ks]
        opt = torch.optim.Adam(sub_corr.P.params(), lr=p0["correction_lr"])
        rng = MemberRNG.seeded([m.seeds[k] + 1 for k in ks])  # dropout stream of the correction phase
        batches = [Batches(n, p0["correction_batch_size"] or p0["batch_size"], keep_last=False,
                           generator=torch.Generator().manual_seed(m.seeds[k] + 2), device=device) for k in ks]
        drop = Dropout(p0["dropout"], rng, exact=_exact(device))
        rows = torch.arange(len(ks), device=device).unsqueeze(1)

        def loss_of(idx, sub_model=sub_model, sub_corr=sub_corr, sub_scales=sub_scales, sub_subsets=sub_subsets,
                    drop=drop, rows=rows):
            if sub_subsets is not None:  # indices into each member's own subset
                idx = sub_subsets[rows, idx]
            return loss_fn(sub_model, sub_corr, sub_scales, data.train_x[idx], data.train_y[idx], drop)

        resumed = [progress[k] for k in ks] if progress[ks[0]] is not None else None
        last = train_epochs_members([m.units[k] for k in ks], sub_corr.P, opt, batches, rng, p0["correction_epochs"],
                                    loss_of, phase="correction", progress=resumed)
        for j, k in enumerate(ks):
            final[k] = last[j]
        if not whole:
            with torch.no_grad():
                for name, v in corr.P.t.items():
                    v[ks] = sub_corr.P[name].detach()
    return final


def lambda_(model, corr, data, scales, m: _Members, device) -> list[float]:
    """``transformer.lambda_`` / ``lambda_schedule.train_correctors_lambda`` for every member, each
    with its own lambda: full batch on its first ``correction_sequences``, eval-mode teacher."""
    p0, K = m.ps[0], len(m)
    bits, steps = p0["bits"], p0["correction_steps"]
    X = torch.stack([data.train_x[m.order(k)[: p0["correction_sequences"]].to(device)] for k in range(K)])
    hybrid = _hybrid_losses(model, corr, X, bits, scales, [float(p["lam"]) for p in m.ps])
    qat = CorrectorQat(corr, bits, steps, p0["legacy_h0_unquantized"], lambda: model(X, QuantTap(bits, scales, corr)),
                       MemberCalibrator)
    opt = torch.optim.Adam(corr.P.params(), lr=p0["correction_lr"])
    last = [float("nan")] * K
    for step in range(1, steps + 1):
        qat.before_step(step)
        values = step_members(opt, hybrid(), corr.P.params())
        record_losses(m.units, step, values, last, phase="correction", report=step % LAMBDA_REPORT_EVERY == 0)
    qat.finish()
    return last


def _hybrid_losses(model, corr: BatchedCorrectors, X: torch.Tensor, bits: int, scales, lams: list[float]):
    """``lambda_schedule._hybrid_loss`` for every member, with its own lambda: (K,) losses of the
    current correctors against the float targets (taken once, here)."""
    K, keys = len(lams), list(corr)
    with torch.no_grad():
        ftap = FloatTap(record=True)
        out_f = model(X, ftap)
        var_out = torch.stack([out_f[k].var().clamp_min(1e-12) for k in range(K)])
        var_k = {key: torch.stack([ftap.acts[key][k].var().clamp_min(1e-12) for k in range(K)]) for key in keys}
    lam_t = torch.tensor(lams, dtype=torch.float32, device=X.device)
    any_lam = any(lams) and len(keys) > 0

    def hybrid() -> torch.Tensor:
        tap = QuantTap(bits, scales, corr, record=True)
        total = mse_losses(model(X, tap), out_f) / var_out
        if any_lam:
            per_point = torch.stack([mse_losses(tap.corrected[key], ftap.acts[key]) / var_k[key] for key in keys])
            point_mean = torch.stack([pk.mean() for pk in per_point.t().contiguous().unbind(0)])  # as run: a 1-D mean
            total = torch.where(lam_t != 0, total + lam_t * point_mean, total)
        return total

    return hybrid


LAMBDA_REPORT_EVERY = 10  # transformer.lambda_ reports every 10 steps
PROTOCOLS = {"hydra": hydra, "grid": grid, "lambda": lambda_}
