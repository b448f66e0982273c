"""The live progress line counts the trials that really run. On 2 CPUs with `cpu: 1` two trials run
at once, and when one finishes the next starts a few milliseconds later: a line drawn in between
used to say "1 running" (and in a log, where a line is written per finished trial, it stayed so)."""
from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from orchestrator.run.progress import Progress
from orchestrator.results.dataset import StudyStore

LINE = re.compile(r"(\d+)/(\d+) finished \| (\d+) running")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")   # on a TTY rich draws the line with escape codes


def lines(stream: io.StringIO) -> list[tuple[int, int, int]]:
    """(finished, total, running) of every progress line written so far."""
    return [tuple(map(int, m.groups())) for m in LINE.finditer(ANSI.sub("", stream.getvalue()))]


def test_a_log_line_waits_for_the_next_trial_to_start():
    out = io.StringIO()
    p = Progress("s/fast", total=5, already=0, stream=out, tty=False, event_interval_s=0.0)
    p.trial_started()
    p.trial_started()
    before = lines(out)
    p.trial_finished("completed")            # the scheduler has not started the next trial yet
    assert lines(out) == before              # so no line says "1 running"
    p.trial_started()                        # ... it has now
    assert lines(out)[-1] == (1, 5, 2)


def test_a_log_line_is_not_held_back_when_nothing_is_left_to_start():
    out = io.StringIO()
    p = Progress("s/fast", total=2, already=0, stream=out, tty=False, event_interval_s=0.0)
    p.trial_started()
    p.trial_started()
    p.trial_finished("completed")
    assert lines(out)[-1] == (1, 2, 1)       # the other one is the last: 1 running is the truth


def test_a_log_line_is_held_back_at_most_settle_s():
    out = io.StringIO()
    p = Progress("s/fast", total=5, already=0, stream=out, tty=False, event_interval_s=0.0, settle_s=0.0)
    p.trial_started()
    p.trial_started()
    p.trial_finished("failed")               # nothing starts (say, the cluster lost a node)
    p.update()
    assert lines(out)[-1] == (1, 5, 1)


def test_the_live_line_is_not_redrawn_between_a_finish_and_the_next_start():
    out = io.StringIO()
    p = Progress("s/fast", total=5, already=0, stream=out, tty=True, min_interval_s=0.0)
    p.trial_started()
    p.trial_started()
    assert lines(out)[-1] == (0, 5, 2)
    p.trial_finished("completed")
    p.update()
    assert lines(out)[-1] == (0, 5, 2)
    p.trial_started()
    assert lines(out)[-1] == (1, 5, 2)


@pytest.mark.usefixtures("ray_local")
def test_two_cpus_one_cpu_per_trial_shows_two_running(tmp_path, write_study, cli):
    doc = {"name": "running", "workload": "synthetic", "metric": "loss", "mode": "min",
           "fixed": {"steps": 4, "work_units": 1, "sleep_s": 0.5}, "grid": {"lr": [0.1, 0.2, 0.3, 0.4, 0.5]},
           "resources": {"cpu": 1}}
    res = tmp_path / "res"
    code, _, err = cli("run", write_study(doc), "--results", res, "--no-report")
    assert code == 0, err
    rows = StudyStore(str(res / "running" / "fast")).rows()
    # two trials really ran at once (the embedded Ray of the tests has 2 CPUs)
    events = sorted([(t, 1) for t in rows["started_at"]] + [(t, -1) for t in rows["finished_at"]],
                    key=lambda e: (pd.Timestamp(e[0]), e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 2
    # and every line written while at least two trials were left says so
    shown = [(done, running) for done, total, running in
             (tuple(map(int, m.groups())) for m in LINE.finditer(err)) if 1 <= done <= total - 2]
    assert shown, err
    assert all(running == 2 for _, running in shown), err


def test_tty_line_is_drawn_by_rich_and_notes_stay_above_it():
    import io

    from orchestrator.run.progress import Progress

    buf = io.StringIO()
    p = Progress("demo/fast", total=10, already=2, stream=buf, tty=True, min_interval_s=0)
    p.trial_started()
    p.trial_started()
    p.trial_finished("completed")
    p.note("trial abc failed, retrying")
    p.trial_finished("failed")
    p.close()
    out = buf.getvalue()
    assert "\x1b[" in out and "━" in out                      # rich drew a bar with escape codes
    text = [line for line in ANSI.sub("", out).splitlines() if line.strip()]
    assert "trial abc failed, retrying" in text
    assert "4/10 finished | 0 running | 1 failed" in text[-1] or "4/10 finished | 0 running | 1 failed" in " ".join(text[-2:])
