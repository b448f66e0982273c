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
from typing import Any, Callable, Mapping

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


def split(members: list[dict[str, Any]], size: int, slots: int, taper: bool = True) -> list[list[dict[str, Any]]]:
    """The members in order, cut into bundles of ``size`` (smaller at the end with ``taper``).
    Trials that ``--retry-failed`` sends again already have a (failed) row, so a member's row
    cannot tell whether it ran in this run: each goes alone, and Tune's own retries cover it as
    before."""
    fresh = [m for m in members if not m.get("rerun")]
    out = [[m] for m in members if m.get("rerun")]
    if taper:
        cuts = sizes(len(fresh), size, slots)
    else:
        cuts = [min(size, len(fresh) - i) for i in range(0, len(fresh), size)]
    i = 0
    for k in cuts:
        out.append(fresh[i:i + k])
        i += k
    return out


def split_with_groups(members: list[dict[str, Any]], size: int, slots: int, *, taper: bool,
                      plan: Any) -> list[list[dict[str, Any]]]:
    """The run's bundles (orchestrator/run/execute.py): the vectorised groups of ``plan``'s workload
    first (the longest units of work; orchestrator/run/groups.py), then the other members as ``split``
    cuts them. The members are not changed: a group's members are marked copies."""
    from orchestrator.run import groups as G
    from orchestrator.run import registry

    setting = plan.group if getattr(plan, "group", None) is not None else plan.study.group
    cap = G.group_cap(setting)
    groups: list[list[dict[str, Any]]] = []
    rest = members
    if cap > 1 and members:
        workload = registry.load(plan.study.workload, plan.workload_spec)
        groups, rest = G.form(members, G.keys(workload, members), cap)
    return groups + (split(rest, size, slots, taper=taper) if rest else [])


def name(members: list[dict[str, Any]]) -> str:
    """A Tune trial name: the trial id for a lone trial."""
    first = members[0]["trial_id"]
    return first if len(members) == 1 else f"{first}+{len(members) - 1}"


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


def trainable(config: dict[str, Any], common: dict[str, Any], table: list) -> None:
    """The Tune trainable: one Tune trial runs one bundle. ``config["bundle"]`` is its index in
    the run's table of bundles, which ``table[0]`` (an object reference) holds: fetched once per
    process and kept. It lives here, in a module that imports little, because every trial process
    imports the module of its trainable."""
    from ray import tune

    members = _bundles(table[0])[config["bundle"]]
    run_bundle(members, common, report=tune.report)


_TABLE: dict[str, list] = {}   # the table of this process's run: object id -> bundles


def _bundles(ref) -> list:
    key = ref.hex()
    if key not in _TABLE:
        import ray

        _TABLE.clear()
        _TABLE[key] = ray.get(ref)
    return _TABLE[key]


def run_bundle(members: list[Mapping[str, Any]], common: Mapping[str, Any],
               report: Callable[[dict], None] | None = None) -> None:
    """Run a bundle's members one after another (see the module doc), or a vectorised group's
    together (orchestrator/run/groups.py; those that fail there then run alone). ``report``: tune.report."""
    from orchestrator.results.dataset import StudyStore
    from orchestrator.run.trial import check_writable, row_status

    store = StudyStore(common["results"])
    reporter = Reporter(report) if report is not None else None

    def on_retry(tid: str, text: str) -> None:
        check_writable(store)   # a full or read-only location: no retries, the driver stops
        if reporter is not None:
            reporter.add("retry", tid, text)

    def done(tid: str, status: str) -> None:
        if reporter is not None:
            reporter.add("done", tid, status)

    from orchestrator.run import groups as G

    if G.is_group(members):
        members = G.run_group_bundle(members, common, store, done=done, on_retry=on_retry)
    first_open = True   # only the first member without a row can have died in an earlier try
    for member in members:
        if reporter is not None and reporter.stopped:
            return
        tid = member["trial_id"]
        payload = {**common, **{k: v for k, v in member.items() if k not in ("deaths", G.GROUP_KEY)}}
        status = run_member(payload, store, check_deaths=first_open, deaths_before=member.get("deaths", 0),
                            on_retry=functools.partial(on_retry, tid))
        if status == "skipped":   # a row from an earlier try of this bundle (or another driver's worker)
            status = row_status(store, tid)
        else:
            first_open = False
        done(tid, status)
    if reporter is not None:
        reporter.close()


def run_member(payload: dict[str, Any], store, *, check_deaths: bool, deaths_before: int = 0,
               on_retry: Callable[[str], None]) -> str:
    """One member to its row; its status, or "skipped" when it had a row already."""
    from orchestrator.results import layout as L
    from orchestrator.results import rows as R
    from orchestrator.run.trial import Unwritable, error_text, failed_row, run_trial

    tid = payload["trial_id"]
    if check_deaths:   # (run_trial itself skips a member that has a row)
        if not payload.get("rerun") and store.exists(L.trial_row(tid)):
            return "skipped"
        deaths = store.counter(tid, L.ATTEMPTS) - store.counter(tid, L.ERRORS) - deaths_before
        if deaths >= payload["max_failures"] + DEATHS_ALLOWED:
            last = (store.read_bytes(L.death_note(tid)) or b"").decode(errors="replace").strip()
            failed_row(payload, "trial process died (all retries used)" + (f": {last}" if last else ""))
            return R.FAILED
    tries = 0
    while True:
        try:
            row = run_trial(payload, store=store, on_retry=on_retry)
            return row.get("status", R.COMPLETED) if row else "skipped"
        except Unwritable:
            raise
        except Exception as e:  # noqa: BLE001 - not the workload's: loading it, the results location
            # as many tries as Ray would give a lone trial
            tries += 1
            if tries > payload["max_failures"] + 2:
                failed_row(payload, error_text(e))
                return R.FAILED
            on_retry(f"{type(e).__name__}: {e}"[:300])
