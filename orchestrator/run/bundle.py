"""Bundles: several pending trials sent to Ray Tune as one Tune trial.

Tune spends tens of milliseconds of driver bookkeeping (and a round trip to the trial's actor) per
trial; with trials of a second or less, and with thousands of them, that is most of a sweep's
overhead and most of the driver's memory (docs/benchmarks.md). A bundle's trainable runs its
members one after another through ``orchestrator.run.trial.run_trial``, so each member still gets its
own row, history, checkpoint and attempt counters, exactly as if it had run alone:

- a member that raises is retried in this process (``max_failures`` times, each try resuming from
  its checkpoint), then gets its ``failed`` row; the other members carry on;
- a member whose process dies takes the bundle with it: Tune runs the bundle again, the members
  that already have a row are skipped, and the one that was running resumes from its checkpoint.
  A member that kills its process ``max_failures + 3`` times in one run (the number of starts Tune
  gives a lone trial) gets a ``failed`` row and the bundle moves on;
- the driver hears of every finished member (one Tune result per second at most, sent from a
  side thread so the members never wait for the driver), which is what the progress line counts.

The size is ``bundle: auto`` (the default) or a number, in the study or with ``--bundle``. Auto
keeps at least 16 bundles per slot, so the slots stay balanced, and sends short grids one trial
per bundle; bundles get smaller towards the end of the sweep, so the slots finish together.
"""
from __future__ import annotations

import functools
import math
import threading
import time
from typing import Any, Callable, Sequence

from orchestrator.run.protocol import Member, NotRun, Status, Unit

MAX_AUTO = 256          # largest automatic bundle
PER_SLOT = 16           # automatic size: at least this many bundles per slot
REPORT_EVERY_S = 1.0    # at most one Tune result per bundle this often
DEATHS_ALLOWED = 3      # + max_failures: process deaths of one member in one run before its failed row


def auto_size(pending: int, slots: int) -> int:
    """Members per bundle for ``bundle: auto``: 1 up to ``PER_SLOT`` trials per slot, then enough
    to keep about ``PER_SLOT`` bundles per slot, at most ``MAX_AUTO``."""
    slots = max(1, slots)
    if pending <= slots * PER_SLOT:
        return 1
    return min(MAX_AUTO, math.ceil(pending / (slots * PER_SLOT)))


def sizes(n: int, size: int, slots: int) -> list[int]:
    """Bundle sizes for ``n`` trials: ``size`` each, then smaller ones at the end (each about half
    of what is left per slot), so that no slot is left with a long bundle while the others idle."""
    out = []
    left = n
    slots = max(1, slots)
    while left > 0:
        k = max(1, min(size, math.ceil(left / (2 * slots))))
        out.append(k)
        left -= k
    return out


def split(members: Sequence[Member], size: int, slots: int, taper: bool = True) -> list[Unit]:
    """The members in order, cut into bundles of ``size`` (smaller at the end with ``taper``).
    Trials that ``--retry-failed`` sends again already have a (failed) row, so a member's row
    cannot tell whether it ran in this run: each goes alone, and Tune's own retries cover it as
    before."""
    fresh = [m for m in members if not m.rerun]
    out = [Unit((m,)) for m in members if m.rerun]
    if taper:
        cuts = sizes(len(fresh), size, slots)
    else:
        cuts = [min(size, len(fresh) - i) for i in range(0, len(fresh), size)]
    i = 0
    for k in cuts:
        out.append(Unit(tuple(fresh[i:i + k])))
        i += k
    return out


def split_with_groups(members: Sequence[Member], size: int, slots: int, *, taper: bool,
                      plan: Any) -> list[Unit]:
    """The run's units (orchestrator/run/execute.py): the vectorised groups of ``plan``'s workload
    first (the longest units of work; orchestrator/run/groups.py), then the other members as ``split``
    cuts them."""
    from orchestrator.run import groups as G
    from orchestrator.run import registry

    setting = plan.group if getattr(plan, "group", None) is not None else plan.study.group
    cap = G.group_cap(setting)
    groups: list[Unit] = []
    rest = list(members)
    if cap > 1 and members:
        workload = registry.load(plan.study.workload, plan.workload_spec)
        groups, rest = G.form(members, G.keys(workload, members), cap)
    return groups + (split(rest, size, slots, taper=taper) if rest else [])


def tune_retries(max_failures: int, largest: int) -> int:
    """Tune's FailureConfig for the bundles: a lone trial gets max_failures + 2 restarts (the
    driver then writes its failed row); a bundle enough for each member to use its share."""
    if largest <= 1:
        return max_failures + 2
    return (max_failures + DEATHS_ALLOWED) * largest


class Reporter:
    """Sends finished members (and in-process retries) to the driver as Tune results from a side
    thread, at most one every ``REPORT_EVERY_S``: ``tune.report`` blocks until the driver asks for
    the next result, and the members should not wait for that."""

    def __init__(self, report: Callable[[dict], None], every_s: float = REPORT_EVERY_S):
        self._report = report
        self._every_s = every_s
        self._events: list[list[str]] = []
        self._cv = threading.Condition()
        self._closing = False
        self.stopped = False      # Tune stopped the trial (Ctrl-C): run no further members
        self._thread = threading.Thread(target=self._loop, name="overnight-bundle-reporter", daemon=True)
        self._thread.start()

    def add(self, kind: str, trial_id: str, text: str) -> None:
        """``kind``: "done" (``text``: the member's status) or "retry" (``text``: the error line)."""
        with self._cv:
            self._events.append([kind, trial_id, text])
            self._cv.notify()

    def _take(self) -> list[list[str]]:
        with self._cv:
            events, self._events = self._events, []
        return events

    def _send(self, events: list[list[str]]) -> None:
        try:
            self._report({"overnight_events": events})
        except BaseException:  # SystemExit: Tune stops this trial
            self.stopped = True
            raise

    def _loop(self) -> None:
        last = -self._every_s
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._events or self._closing)
                wait = last + self._every_s - time.monotonic()
                if wait > 0:
                    self._cv.wait_for(lambda: self._closing, timeout=wait)
                if self._closing:   # close() sends what is left
                    return
            try:
                self._send(self._take())
            except BaseException:  # noqa: BLE001 - stopped (see _send)
                return
            last = time.monotonic()

    def close(self) -> None:
        """Send what is left from the calling thread, once the side thread is done."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        events = self._take()
        if events and not self.stopped:
            self._send(events)


def trainable(config: dict[str, Any], table: list) -> None:
    """The Tune trainable: one Tune trial runs one unit. ``config["bundle"]`` is its index in
    the run's table of units, which ``table[0]`` (an object reference) holds: fetched once per
    process and kept. It lives here, in a module that imports little, because every trial process
    imports the module of its trainable."""
    from ray import tune

    run_unit(_units(table[0])[config["bundle"]], report=tune.report)


_TABLE: dict[str, list[Unit]] = {}   # the table of this process's run: object id -> units


def _units(ref) -> list[Unit]:
    key = ref.hex()
    if key not in _TABLE:
        import ray

        _TABLE.clear()
        _TABLE[key] = ray.get(ref)
    return _TABLE[key]


def run_unit(unit: Unit, report: Callable[[dict], None] | None = None) -> None:
    """Run a bundle's members one after another (see the module doc), or a vectorised group's
    together (orchestrator/run/groups.py; those that fail there then run alone). ``report``: tune.report."""
    from orchestrator.results.dataset import StudyStore
    from orchestrator.run.trial import check_writable, row_status

    members: Sequence[Member] = unit.members
    store = StudyStore(members[0].results)
    reporter = Reporter(report) if report is not None else None

    def on_retry(tid: str, text: str) -> None:
        check_writable(store)   # a full or read-only location: no retries, the driver stops
        if reporter is not None:
            reporter.add("retry", tid, text)

    def done(tid: str, status: Status) -> None:
        if reporter is not None:
            reporter.add("done", tid, status.value)   # a plain string in the Tune result

    if unit.grouped:
        from orchestrator.run import groups as G

        members = G.run_group_bundle(members, store, done=done, on_retry=on_retry)
    first_open = True   # only the first member without a row can have died in an earlier try
    for member in members:
        if reporter is not None and reporter.stopped:
            return
        tid = member.trial_id
        result = run_member(member, store, check_deaths=first_open, on_retry=functools.partial(on_retry, tid))
        if result is NotRun.HAD_ROW:   # a row from an earlier try of this unit (or another driver's worker)
            status = row_status(store, tid)
        else:
            status = result
            first_open = False
        done(tid, status)
    if reporter is not None:
        reporter.close()


def run_member(member: Member, store, *, check_deaths: bool, on_retry: Callable[[str], None]) -> Status | NotRun:
    """One member to its row: its status, or ``NotRun.HAD_ROW`` when it had a row already.
    ``check_deaths``: whether its process may have died in an earlier try of this unit."""
    from orchestrator.results import layout as L
    from orchestrator.run.trial import Unwritable, error_text, failed_row, run_trial

    tid = member.trial_id
    if check_deaths:   # (run_trial itself skips a member that has a row)
        if not member.rerun and store.exists(L.trial_row(tid)):
            return NotRun.HAD_ROW
        deaths = store.counter(tid, L.ATTEMPTS) - store.counter(tid, L.ERRORS) - member.deaths
        if deaths >= member.max_failures + DEATHS_ALLOWED:
            last = (store.read_bytes(L.death_note(tid)) or b"").decode(errors="replace").strip()
            failed_row(member, "trial process died (all retries used)" + (f": {last}" if last else ""))
            return Status.FAILED
    tries = 0
    while True:
        try:
            row = run_trial(member, store=store, on_retry=on_retry)
            return Status(row["status"]) if row is not None else NotRun.HAD_ROW
        except Unwritable:
            raise
        except Exception as e:  # noqa: BLE001 - not the workload's: loading it, the results location
            # as many tries as Ray would give a lone trial
            tries += 1
            if tries > member.max_failures + 2:
                failed_row(member, error_text(e))
                return Status.FAILED
            on_retry(f"{type(e).__name__}: {e}"[:300])
