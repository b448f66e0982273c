"""One live progress line (TTY, drawn by rich) or plain log lines (pipes, CI): done / running /
failed / pending + ETA."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from orchestrator.formats import fmt_duration
from orchestrator.run.protocol import Status

if TYPE_CHECKING:
    from rich.live import Live


@dataclass
class Progress:
    label: str
    total: int            # trials in the study
    already: int          # finished before this run
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    tty: bool | None = None
    min_interval_s: float = 0.5
    log_interval_s: float = 30.0
    event_interval_s: float = 2.0  # plain lines: at most one per finished trial this often
    settle_s: float = 3.0  # longest wait for the next trial to start after one finished
    completed: int = 0
    failed: int = 0
    diverged: int = 0
    running: int = 0
    _t0: float = field(default_factory=time.monotonic)
    _first_start: float | None = None
    _last: float = 0.0
    _last_line: str = ""
    # A trial just finished and the scheduler has not started the next one yet (it does so a few
    # milliseconds later): a line drawn now would show one trial fewer running than really run.
    # So the line waits until the running count is back where it was, nothing is left to start,
    # or settle_s has passed.
    _finished_at: float | None = None
    _level: int = 0
    _event: bool = False   # a finished trial not yet shown in a plain line
    _live: Live | None = None   # rich.live.Live on a TTY, started on the first update

    def __post_init__(self) -> None:
        if self.tty is None:
            self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    @property
    def finished_now(self) -> int:
        return self.completed + self.failed + self.diverged

    @property
    def pending(self) -> int:
        return max(0, self.total - self.already - self.finished_now - self.running)

    def eta_s(self) -> float | None:
        done = self.finished_now
        left = self.total - self.already - done
        if done == 0 or left <= 0:
            return None if left > 0 else 0.0
        # the rate since the first trial started: Ray's start-up is not paid again per trial
        since = self._first_start if self._first_start is not None else self._t0
        return (time.monotonic() - since) / done * left

    def line(self) -> str:
        done = self.already + self.completed + self.diverged
        eta = self.eta_s()
        parts = [f"[{self.label}] {done + self.failed}/{self.total} finished",
                 f"{self.running} running", f"{self.failed} failed"]
        if self.diverged:
            parts.append(f"{self.diverged} diverged")
        parts += [f"{self.pending} pending", f"elapsed {fmt_duration(time.monotonic() - self._t0)}",
                  "ETA " + ("--" if eta is None else fmt_duration(eta))]
        return " | ".join(parts)

    def _settled(self, now: float) -> bool:
        if self._finished_at is None:
            return True
        if self.running >= self._level or self.pending == 0 or now - self._finished_at >= self.settle_s:
            self._finished_at = None
            return True
        return False

    def update(self, force: bool = False, event: str | None = None) -> None:
        now = time.monotonic()
        settled = self._settled(now)
        if self.tty:
            if force or (settled and now - self._last >= self.min_interval_s):
                self._draw()
                self._last = now
            return
        # plain lines: after finished trials (at most one every 2 s, once the next trial started)
        # and as a heartbeat
        if event:
            self._event = True
        due = self._event and settled and now - self._last >= self.event_interval_s
        if force or due or now - self._last >= self.log_interval_s:
            text = self.line()
            if text != self._last_line or now - self._last >= self.log_interval_s:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_line = text
            self._last = now
            self._event = False

    def _renderable(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        done = self.already + self.finished_now
        label, _, rest = self.line().partition("] ")
        row = Table.grid(padding=(0, 1))
        row.add_row(Text(label + "]", style="bold"), ProgressBar(total=max(self.total, 1), completed=done, width=28),
                    Text(rest, style="red" if self.failed else "", no_wrap=True, overflow="ellipsis"))
        return row

    def _draw(self) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, force_terminal=True)
            self._live = Live(self._renderable(), console=console, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(self._renderable(), refresh=True)

    def note(self, text: str) -> None:
        """A message line that does not break the live line."""
        if self.tty and self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last = 0.0
        self.update()

    def trial_started(self) -> None:
        if self._first_start is None:
            self._first_start = time.monotonic()
        self.running += 1
        self.update()

    def trial_finished(self, status: Status) -> None:
        """A Tune trial of one study trial ended: its slot is free and the trial counted."""
        self._free()
        self._count(status)
        self.update(event="finished")

    def member_finished(self, status: Status) -> None:
        """A study trial finished inside a bundle (orchestrator/run/bundle.py): the bundle runs on."""
        self._count(status)
        self.update(event="finished")

    def slot_freed(self) -> None:
        """A Tune trial (a bundle) ended; its trials were counted as they finished."""
        self._free()
        self.update()

    def _free(self) -> None:
        if self._finished_at is None:
            self._level = self.running
        self._finished_at = time.monotonic()
        self.running = max(0, self.running - 1)

    def _count(self, status: Status) -> None:
        if status == Status.FAILED:
            self.failed += 1
        elif status == Status.DIVERGED:
            self.diverged += 1
        else:
            self.completed += 1

    def close(self) -> None:
        self.update(force=True)
        if self._live is not None:
            self._live.stop()
            self._live = None
