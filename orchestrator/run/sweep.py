"""The driver's side of one Tune fit (orchestrator/run/execute.py): what the sweep has seen so far, and the
Tune callback and stopper that feed it.

Imports Ray Tune at the top, so execute imports this module only once Ray is set up (its
environment variables must be set before Ray is first imported). Tune pickles its callbacks and
stopper into tuner.pkl; both pickle as Tune's plain ones (``__reduce__``), since nothing restores
from that file, so the sweep's state never travels with them.
"""
from __future__ import annotations

import signal
import threading
import time

from ray import tune
from ray.tune.experiment import Trial

from orchestrator.results import layout as L
from orchestrator.errors import UserError
from orchestrator.run.progress import Progress
from orchestrator.run.protocol import Member, Status, Unit
from orchestrator.results.dataset import StudyStore
from orchestrator.run.trial import failed_row, row_status


class Sweep:
    """The units of one fit and what the driver knows of them: the statuses the progress line
    counted, whether the results location refused writes, whether a Ctrl-C came."""

    def __init__(self, store: StudyStore, units: list[Unit], progress: Progress, counted: dict[str, Status]):
        self.store, self.units, self.progress = store, units, progress
        self.counted = counted            # trial -> status, as the progress line counted it
        self.unwritable: list[str] = []   # set once the results location refuses writes: stop the sweep
        self.interrupted: list[int] = []  # SIGINT (Ctrl-C) seen while Tune ran

    def count(self, tid: str, status: Status) -> None:
        if tid not in self.counted:
            self.counted[tid] = status
            self.progress.member_finished(status)

    def storage_problem(self) -> bool:
        """After a trial failure: is it the results location that refuses writes (full, read-only)?
        Then every retry would fail the same way, so the sweep stops (see StopWhenUnwritable)."""
        if not self.unwritable:
            try:
                self.store.check_writable()
            except UserError as e:
                self.unwritable.append(e.bare)
        return bool(self.unwritable)

    def members_of(self, trial) -> tuple[Member, ...]:
        return self.units[trial.config["bundle"]].members

    def running_member(self, trial) -> str:
        """The member a unit was running: its first one without a row."""
        for m in self.members_of(trial):
            if m.rerun or not self.store.exists(L.trial_row(m.trial_id)):
                return m.trial_id
        return self.members_of(trial)[-1].trial_id


class StopWhenUnwritable(tune.Stopper):
    def __init__(self, sweep: Sweep):
        self.sweep = sweep

    def __reduce__(self):  # pickled into tuner.pkl like the callbacks; never restored
        return (tune.stopper.NoopStopper, ())

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return bool(self.sweep.unwritable)


class Bridge(tune.Callback):
    """Feeds the progress line and records trials whose process died for good."""

    _recount_at = 0.0

    def __init__(self, sweep: Sweep):
        self.sweep = sweep

    def __reduce__(self):  # Tune pickles its callbacks into tuner.pkl; we never restore from it
        return (tune.Callback, ())

    def setup(self, **info):
        # Tune installs its own SIGINT handler (stop the trials, save its state, return from
        # fit() as if nothing happened) just before it sets up the callbacks. Wrap it, so that
        # a Ctrl-C is known and the run ends with exit 130 and the resume hint.
        if threading.current_thread() is not threading.main_thread():
            return
        tune_handler = signal.getsignal(signal.SIGINT)
        sweep = self.sweep

        def on_sigint(sig, frame):
            sweep.interrupted.append(sig)
            sweep.progress.note("interrupted: stopping the trials (Ctrl-C again to stop at once)")
            if callable(tune_handler):
                tune_handler(sig, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.sweep.progress.trial_started()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for kind, tid, text in result.get("overnight_events") or ():
            if kind == "done":
                self.sweep.count(tid, Status(text))
            elif kind == "retry":
                self.sweep.progress.note(f"trial {tid} failed, retrying: {text}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        sweep, progress = self.sweep, self.sweep.progress
        progress.running = max(0, progress.running - 1)
        if sweep.storage_problem():
            return
        tid = sweep.running_member(trial)
        err = last_error_line(str(getattr(trial, "error_msg", "") or "").strip().splitlines())
        if err and len(sweep.members_of(trial)) > 1:
            try:  # the member's failed row says why, if it comes to that (orchestrator/run/bundle.py)
                sweep.store.write_bytes(L.death_note(tid), err.encode())
            except OSError:
                pass
        progress.note(f"trial {tid} failed, retrying" + (f": {err}" if err else ""))

    def on_trial_complete(self, iteration, trials, trial, **info):
        sweep = self.sweep
        for m in sweep.members_of(trial):  # all reported; this is a safety net
            if m.trial_id not in sweep.counted:
                sweep.count(m.trial_id, row_status(sweep.store, m.trial_id))
        sweep.progress.slot_freed()

    def on_trial_error(self, iteration, trials, trial, **info):
        sweep = self.sweep
        if sweep.interrupted or sweep.storage_problem():  # not the trials' fault: the next run resumes them
            return
        done = sweep.store.finished_ids()
        err = getattr(trial, "error_msg", None) or "trial process died (all retries used)"
        err = str(err).strip().splitlines()[-1] if err else "trial process died"
        for m in sweep.members_of(trial):
            tid = m.trial_id
            if tid not in done or (m.rerun and tid not in sweep.counted):
                failed_row(m, err)
                sweep.count(tid, Status.FAILED)
            elif tid not in sweep.counted:
                sweep.count(tid, row_status(sweep.store, tid))
        sweep.progress.slot_freed()

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now >= self._recount_at:   # O(trials): not on every step of a long sweep
            self.sweep.progress.running = sum(1 for t in trials if t.status == Trial.RUNNING)
            self._recount_at = now + 0.5
        self.sweep.progress.update()


def last_error_line(lines: list[str]) -> str:
    """The exception line of a Ray error text (skipping traceback frames)."""
    for line in reversed(lines):
        line = line.strip()
        if line and not line.startswith(("File ", "^", "~")) and ("Error" in line or "Exception" in line):
            return line[:200]
    return lines[-1].strip()[:200] if lines else ""
