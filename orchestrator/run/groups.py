"""Vectorised trial groups: trials that one batched computation can run together, sent to Ray
Tune as one Tune trial, each still with its own row, history, checkpoint and retries.

A workload opts in with two methods (orchestrator/study/contract.py, ``Workload``): ``group_key(config)``
(equal keys: the configs differ only in values, such as the seed or a loss weight; None: this
trial runs alone) and ``run_group(configs, ctxs)``, one metrics dict or exception per config.

In the driver (``bundle.split_with_groups``), the pending trials with equal keys are cut into
groups of up to the study's ``group`` (``auto``: 8; ``off``: no groups; ``--group`` overrides it),
as evenly as the cap allows; each group is one ``Unit`` (orchestrator/run/protocol.py). Trials without a
key, trials alone under their key and trials sent again by ``--retry-failed`` are bundled as before.

In the trial process (``run_group_bundle``):

- members that have a row are skipped (dedup per member, as in any bundle);
- every other member gets its own try and ctx, exactly as ``run_trial`` builds them (its
  ``attempts`` counter, seed, device, checkpoint, stage cache), and ``run_group`` runs once over
  them. Each returned metrics dict (or ``Diverged``) becomes that member's row and history, as
  ``run_trial`` would write them (``wall_s``: its share of the group's time); the rows are written
  one after another once the group is done;
- a member whose entry is an exception, and every member when ``run_group`` itself raises, has
  that try counted as a failed one (``errors``) and runs again alone through ``run_member``, with
  the retries left to it (always at least one lone try);
- a group whose process died earlier in this run (a member has a try without a row and without
  an error) runs its members one by one: each resumes from its own checkpoint, and one that
  kills its process again is found, and failed, alone.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any, Callable, Sequence

from orchestrator.results import layout as L
from orchestrator.run.protocol import Member, Status, Unit

AUTO_GROUP = 8          # the most trials in one group with ``group: auto``


def group_cap(setting: int | str | None) -> int:
    """The most trials per group for a ``group`` setting (1: no groups)."""
    if setting in (None, "auto"):
        return AUTO_GROUP
    if setting == "off":
        return 1
    return int(setting)


def keys(workload: Any, members: Sequence[Member]) -> list[Any]:
    """Each member's group key (None: not grouped), computed with the workload's ``group_key``;
    all None when the workload does not declare both methods."""
    key_of = getattr(workload, "group_key", None)
    if not callable(key_of) or not callable(getattr(workload, "run_group", None)):
        return [None] * len(members)
    from orchestrator.errors import UserError

    out: list[Any] = []
    for m in members:
        if m.rerun:   # --retry-failed: alone, as in any bundle (orchestrator/run/bundle.py split)
            out.append(None)
            continue
        try:
            out.append(key_of(dict(m.config)))
        except Exception as e:  # noqa: BLE001 - the workload's bug: say where, one line
            raise UserError(f"workload {getattr(workload, 'name', '?')}: group_key failed for trial {m.trial_id}: "
                            f"{type(e).__name__}: {e} (--group off runs the trials one by one)",
                            field="group") from None
    return out


def form(members: Sequence[Member], member_keys: list[Any], cap: int) -> tuple[list[Unit], list[Member]]:
    """(groups, the rest): members with the same key, in order, cut into ceil(n / cap) groups of
    sizes as equal as possible (10 with cap 8: 5 + 5). A key with one member leaves it in the rest;
    a part of one (3 with cap 2: 2 + 1) is a unit of its own that runs as a bundle."""
    if cap <= 1:
        return [], list(members)
    by_key: dict[Any, list[int]] = defaultdict(list)
    for i, k in enumerate(member_keys):
        if k is not None:
            by_key[k].append(i)
    grouped: set[int] = set()
    groups = []
    for idx in by_key.values():
        if len(idx) < 2:
            continue
        n_groups = math.ceil(len(idx) / cap)
        base, extra = divmod(len(idx), n_groups)
        start = 0
        for g in range(n_groups):
            size = base + (1 if g < extra else 0)
            part = idx[start:start + size]
            start += size
            groups.append(Unit(tuple(members[i] for i in part), grouped=len(part) > 1))
            grouped.update(part)
    rest = [m for i, m in enumerate(members) if i not in grouped]
    return groups, rest


def run_group_bundle(members: Sequence[Member], store, done: Callable[[str, Status], None],
                     on_retry: Callable[[str, str], None]) -> list[Member]:
    """Run a group's members as one batched computation (see the module doc). ``done(trial_id,
    status)`` is called for every member that has its row (skipped or written here);
    ``on_retry(trial_id, text)`` for every member that failed in the group. Returns the members
    still to run, alone and in order (``bundle.run_member``)."""
    from orchestrator.run import registry
    from orchestrator.run.trial import open_try, row_status, seed_everything

    todo = []
    for m in members:
        tid = m.trial_id
        if store.exists(L.trial_row(tid)):   # an earlier try of this bundle, or another driver's worker
            done(tid, row_status(store, tid))
        else:
            todo.append(m)
    if len(todo) < 2 or any(_died_in_this_run(store, m) for m in todo):
        return todo
    tries = []
    try:
        workload = registry.load(todo[0].workload, todo[0].workload_spec)()
        for m in todo:
            tries.append(open_try(m, store))
    except Exception:  # noqa: BLE001 - not the workload's run: the lone path retries and reports it
        for t in tries:
            store.bump(t.p.trial_id, L.ERRORS)
        return todo
    seed_everything(tries[0].ctx.seed)
    results, share = _batched(workload, tries)
    return _record(todo, tries, results, workload, store, share, done, on_retry)


def _batched(workload, tries: list) -> tuple[list, float]:
    """The group's one computation: an entry per try (its metrics or its exception), and each
    try's share of the wall time. If run_group itself fails, every entry is that exception."""
    from orchestrator.study.contract import grouped, params_of

    t0 = time.perf_counter()
    try:
        group = grouped(workload)
        if group is None:
            raise TypeError(f"workload {workload.name} has no run_group")
        results = list(group.run_group([params_of(workload, t.config) for t in tries], [t.ctx for t in tries]))
        if len(results) != len(tries):
            raise RuntimeError(f"run_group returned {len(results)} results for {len(tries)} configs")
    except Exception as e:  # noqa: BLE001 - the batched computation failed: every member alone
        results = [e] * len(tries)
    return results, (time.perf_counter() - t0) / len(tries)


def _record(todo: list[Member], tries: list, results: list, workload, store, share: float,
            done: Callable[[str, Status], None], on_retry: Callable[[str, str], None]) -> list[Member]:
    """Each member's row from its entry; the members whose entry failed, or whose row could not be
    written, are returned to run alone."""
    from orchestrator.study.contract import Diverged
    from orchestrator.run.trial import check_writable, close_try, outcome

    left = []
    for m, t, result in zip(todo, tries, results):
        tid = t.p.trial_id
        if isinstance(result, BaseException) and not isinstance(result, Diverged):
            store.bump(tid, L.ERRORS)   # this try failed; the lone path gives the member its retries
            on_retry(tid, f"in its group: {type(result).__name__}: {result}"[:300])
            left.append(m)
            continue
        try:
            status, error, metrics = outcome(t.p, result, workload)
            row = close_try(t, store, status, error, metrics, wall_s=share)
        except Exception as e:  # noqa: BLE001 - writing its row failed: a full or read-only location stops here
            check_writable(store)
            store.bump(tid, L.ERRORS)
            on_retry(tid, f"{type(e).__name__}: {e}"[:300])
            left.append(m)
            continue
        done(tid, Status(row["status"]))
    return left


def _died_in_this_run(store, member: Member) -> bool:
    """A try of this member in this run ended without a row and without an error: its process died."""
    tid = member.trial_id
    return store.counter(tid, L.ATTEMPTS) - store.counter(tid, L.ERRORS) - member.deaths > 0

