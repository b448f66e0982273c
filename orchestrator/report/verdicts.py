"""Verdicts for claims (orchestrator/study/claims.py), computed from a study's rows with a stated rule.

One verdict per claim: **holds**, **not separated**, **reversed** or **not testable here**.

- A difference (an order's adjacent pair, a statistic against a threshold, a correlation against
  0) with at least ``BOOTSTRAP_MIN`` observations gets a percentile bootstrap 95 % interval
  (``RESAMPLES`` resamples, seed ``SEED``, so it is reproducible): it holds when the interval
  lies on the claimed side of 0, is reversed when it lies on the other, else is not separated.
- With fewer observations a difference gets an exact two-sided sign test at alpha 0.05 instead
  (ties dropped): below 6 observations no verdict but "not separated" is possible.
- An order ``a > b > c`` holds when every adjacent pair holds, and is reversed when any is.
- A correlation needs at least ``CORRELATION_MIN`` points, else it is not testable here.
- A ``counts`` claim holds when the seed's most frequent value is also ours, by a sign test of
  its rows against the rows of the seed's runner-up value.
- A failed precondition (``requires``), a missing column or too few rows: not testable here.

A claim with a ``where`` filter is judged again without it; the table shows both when they differ,
so a filter never silently decides a verdict."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from orchestrator.study.claims import Claim
from orchestrator.report.tables import correlation

HOLDS, NOT_SEPARATED, REVERSED, UNTESTABLE = "holds", "not separated", "reversed", "not testable here"
VERDICTS = (HOLDS, NOT_SEPARATED, REVERSED, UNTESTABLE)
RESAMPLES = 10_000
SEED = 0
BOOTSTRAP_MIN = 12
CORRELATION_MIN = 8
ALPHA = 0.05


@dataclass
class Test:
    """One comparison: n observations, the estimate, its 95 % interval (None under a sign test)."""
    label: str
    n: int
    estimate: float
    low: float | None = None
    high: float | None = None
    p: float | None = None
    rule: str = ""
    verdict: str = NOT_SEPARATED


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    tests: list[Test] = field(default_factory=list)
    reason: str = ""                       # why not testable, or what the rows showed
    unfiltered: "Verdict | None" = None    # the same claim without its where filter, when it differs

    @property
    def rule(self) -> str:
        return "; ".join(dict.fromkeys(t.rule for t in self.tests if t.rule))


# ---------------------------------------------------------------------------- statistics
def _statistic(values: np.ndarray, stat: str) -> float:
    return float(np.median(values)) if stat == "median" else float(np.mean(values))


def bootstrap(values: np.ndarray, stat: str, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile 95 % interval of ``stat`` of ``values`` (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    draws = np.median(values[idx], axis=1) if stat == "median" else values[idx].mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def sign_test(positive: int, negative: int) -> float:
    """Exact two-sided binomial p-value of ``positive`` against ``negative`` (p = 1/2)."""
    n = positive + negative
    if n == 0:
        return 1.0
    k = min(positive, negative)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _side(low: float, high: float) -> str:
    return HOLDS if low > 0 else REVERSED if high < 0 else NOT_SEPARATED


def difference_test(label: str, diffs: np.ndarray, stat: str, what: str) -> Test:
    """Is the ``stat`` of ``diffs`` (claimed side: > 0) away from 0?"""
    diffs = diffs[np.isfinite(diffs)]
    n = len(diffs)
    if n == 0:
        return Test(label, 0, float("nan"), rule="no observations", verdict=UNTESTABLE)
    est = _statistic(diffs, stat)
    if n >= BOOTSTRAP_MIN:
        low, high = bootstrap(diffs, stat)
        return Test(label, n, est, low, high, rule=f"{what}: {stat}, bootstrap 95 % interval ({RESAMPLES:,} "
                                                    f"resamples, seed {SEED})", verdict=_side(low, high))
    pos, neg = int((diffs > 0).sum()), int((diffs < 0).sum())
    p = sign_test(pos, neg)
    verdict = NOT_SEPARATED if p >= ALPHA else HOLDS if pos > neg else REVERSED
    return Test(label, n, est, p=p, rule=f"{what}: exact two-sided sign test, alpha {ALPHA} "
                                         f"(fewer than {BOOTSTRAP_MIN} observations)", verdict=verdict)


def equivalence_test(label: str, diffs: np.ndarray, stat: str, margin: float, what: str) -> Test:
    """Is the ``stat`` of ``diffs`` within +-``margin`` (holds), outside it (reversed: there is an
    effect), or can the rows not tell (not separated)? Needs an interval: too few rows cannot show
    that nothing changed."""
    diffs = diffs[np.isfinite(diffs)]
    n = len(diffs)
    if n == 0:
        return Test(label, 0, float("nan"), rule="no observations", verdict=UNTESTABLE)
    est = _statistic(diffs, stat)
    if n < BOOTSTRAP_MIN:
        return Test(label, n, est, rule=f"{what}: fewer than {BOOTSTRAP_MIN} observations cannot show 'the same'",
                    verdict=NOT_SEPARATED)
    low, high = bootstrap(diffs, stat)
    verdict = HOLDS if -margin < low and high < margin else REVERSED if low > margin or high < -margin else NOT_SEPARATED
    return Test(label, n, est, low, high, rule=f"{what}: {stat}, bootstrap 95 % interval ({RESAMPLES:,} resamples, "
                                               f"seed {SEED}) within +-{margin:g}", verdict=verdict)


def two_group_test(label: str, a: np.ndarray, b: np.ndarray, stat: str) -> Test:
    """Unpaired: is stat(a) - stat(b) > 0? Each group resampled on its own."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return Test(label, len(a) + len(b), float("nan"), rule="fewer than 2 rows in a group", verdict=UNTESTABLE)
    est = _statistic(a, stat) - _statistic(b, stat)
    rng = np.random.default_rng(SEED)
    ia = rng.integers(0, len(a), size=(RESAMPLES, len(a)))
    ib = rng.integers(0, len(b), size=(RESAMPLES, len(b)))
    f = (lambda v: np.median(v, axis=1)) if stat == "median" else (lambda v: v.mean(axis=1))
    low, high = np.percentile(f(a[ia]) - f(b[ib]), [2.5, 97.5])
    return Test(label, len(a) + len(b), est, float(low), float(high),
                rule=f"unpaired difference of {stat}s, bootstrap 95 % interval ({RESAMPLES:,} resamples per group, "
                     f"seed {SEED})", verdict=_side(low, high))


def correlation_test(label: str, x: np.ndarray, y: np.ndarray, method: str, sign: str) -> Test:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < CORRELATION_MIN:
        return Test(label, n, float("nan"), rule=f"fewer than {CORRELATION_MIN} points", verdict=UNTESTABLE)
    rho = correlation(x, y, method)
    if not math.isfinite(rho):
        return Test(label, n, rho, rule="a column is constant", verdict=UNTESTABLE)
    rng = np.random.default_rng(SEED)
    draws = []
    for _ in range(min(RESAMPLES, 2_000)):  # each draw ranks again: 2,000 keep a report fast
        i = rng.integers(0, n, n)
        draws.append(correlation(x[i], y[i], method))
    finite = np.asarray([d for d in draws if math.isfinite(d)])
    low, high = np.percentile(finite, [2.5, 97.5])
    s = 1.0 if sign == "positive" else -1.0
    verdict = _side(*sorted((s * float(low), s * float(high))))
    return Test(label, n, rho, float(low), float(high),
                rule=f"{method} correlation, bootstrap 95 % interval over rows ({len(finite):,} resamples, seed {SEED})",
                verdict=verdict)


# ---------------------------------------------------------------------------- rows
def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _filtered(rows: pd.DataFrame, where: str | None) -> pd.DataFrame:
    return rows.query(where, engine="python") if where else rows


def _matches(series: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, bool):
        return series.astype(object).map(lambda v: v is value or v == value)
    if isinstance(value, (int, float)):
        return pd.to_numeric(series, errors="coerce") == float(value)
    return series.astype(str) == str(value)


def _requirements(claim: Claim, rows: pd.DataFrame) -> str:
    """Why the claim cannot be tested on these rows ("" when every precondition is met)."""
    for r in claim.requires:
        sub = _filtered(rows, r.where)
        values = _numeric(sub[r.metric]) if r.metric in sub.columns else np.array([])
        values = values[np.isfinite(values)]
        if not len(values):
            return f"{r.why} (no values of {r.metric})"
        got = float(getattr(np, r.stat)(values))
        ok = {">": got > r.value, ">=": got >= r.value, "<": got < r.value, "<=": got <= r.value}[r.op]
        if not ok:
            return f"{r.why}: {r.stat} {r.metric} = {got:.4g}, needs {r.op} {r.value:g}"
    return ""


def _metric_order(claim: Claim, rows: pd.DataFrame) -> list[Test]:
    """a > b > ... between a row's own metrics: differences paired by row."""
    assert claim.metrics is not None  # _order calls this for a claim over metrics
    return [difference_test(f"{a} > {b}", _numeric(rows[a]) - _numeric(rows[b]), claim.stat, "paired by row, differences")
            for a, b in zip(claim.metrics, claim.metrics[1:])]


def _order(claim: Claim, rows: pd.DataFrame, config_columns: list[str]) -> list[Test]:
    if claim.metrics:
        return _metric_order(claim, rows)
    tests = []
    paired = claim.paired
    if paired == "auto":
        paired = [c for c in config_columns if c != claim.column and c in rows.columns
                  and rows[c].astype(str).nunique() > 1]
    pairs: Iterable[tuple[Any, Any]]
    if claim.kind == "equal":
        assert claim.values is not None  # Claim's validator requires it of an equal claim
        pairs = [(claim.values[0], v) for v in claim.values[1:]]
    else:
        assert claim.order is not None  # and order of an order claim not over metrics
        pairs = zip(claim.order, claim.order[1:])
    for a, b in pairs:
        label = f"{claim.column} {a} {'=' if claim.kind == 'equal' else '>'} {b}"
        ra, rb = rows[_matches(rows[claim.column], a)], rows[_matches(rows[claim.column], b)]
        if paired is None and claim.kind == "equal":
            a_, b_ = _numeric(ra[claim.metric]), _numeric(rb[claim.metric])
            a_, b_ = a_[np.isfinite(a_)], b_[np.isfinite(b_)]
            diff = np.array([_statistic(a_, claim.stat) - _statistic(b_, claim.stat)]) if len(a_) and len(b_) else np.array([])
            tests.append(Test(label, len(a_) + len(b_), float(diff[0]) if len(diff) else float("nan"),
                              rule="an equality needs paired rows (paired: auto or columns)", verdict=UNTESTABLE))
            continue
        if paired is None:
            tests.append(two_group_test(label, _numeric(ra[claim.metric]), _numeric(rb[claim.metric]), claim.stat))
            continue
        keys = list(paired)

        def cells(r: pd.DataFrame, keys: list = keys) -> pd.Series:  # one value per pairing key (mean of repeats)
            if not keys:
                return pd.Series({(): float(np.nanmean(_numeric(r[claim.metric])))}) if len(r) else pd.Series(dtype=float)
            k = r[keys].astype(str).agg("|".join, axis=1)
            return pd.Series(_numeric(r[claim.metric]), index=k.to_numpy()).groupby(level=0).mean()
        ca, cb = cells(ra), cells(rb)
        common = ca.index.intersection(cb.index)
        diffs = (ca[common] - cb[common]).to_numpy(dtype=float)
        what = f"paired on {', '.join(keys) or 'nothing'}, differences"
        if claim.kind == "equal":
            assert claim.margin is not None  # Claim's validator requires it of an equal claim
            tests.append(equivalence_test(label, diffs, claim.stat, claim.margin, what))
        else:
            tests.append(difference_test(label, diffs, claim.stat, what))
    return tests


def _threshold(claim: Claim, rows: pd.DataFrame) -> list[Test]:
    assert claim.value is not None  # Claim's validator requires it of a threshold claim
    values = _numeric(rows[claim.metric])
    sign = 1.0 if claim.op in (">", ">=") else -1.0
    t = difference_test(f"{claim.stat} {claim.metric} {claim.op} {claim.value:g}", sign * (values - claim.value),
                        claim.stat, f"rows against {claim.value:g}")
    if t.n:  # report the statistic itself, not the signed distance from the threshold
        t.estimate = claim.value + sign * t.estimate
        if t.low is not None and t.high is not None:  # set together
            t.low, t.high = sorted((claim.value + sign * t.low, claim.value + sign * t.high))
    return [t]


def _counts(claim: Claim, rows: pd.DataFrame) -> tuple[list[Test], str]:
    assert claim.expect is not None  # Claim's validator requires it of a counts claim
    ours = rows[claim.column].astype(str).value_counts()
    ranked = sorted(claim.expect.items(), key=lambda kv: -kv[1])
    (top, _), (second, _) = ranked[0], ranked[1]
    k, m = int(ours.get(top, 0)), int(ours.get(second, 0))
    p = sign_test(k, m)
    verdict = NOT_SEPARATED if p >= ALPHA else HOLDS if k > m else REVERSED
    shown = " / ".join(f"{v} {int(ours.get(v, 0))}" for v, _ in ranked)
    return [Test(f"{top} > {second}", k + m, float(k - m), p=p,
                 rule=f"most frequent value: exact two-sided sign test of {top} against {second}, alpha {ALPHA}",
                 verdict=verdict)], f"ours: {shown}"


def _correlation(claim: Claim, rows: pd.DataFrame) -> list[Test]:
    assert claim.sign is not None  # Claim's validator requires it of a correlation claim
    return [correlation_test(f"{claim.method}({claim.x}, {claim.y}) {claim.sign}", _numeric(rows[claim.x]),
                             _numeric(rows[claim.y]), claim.method, claim.sign)]


def _combine(tests: list[Test]) -> str:
    if not tests or any(t.verdict == UNTESTABLE for t in tests):
        return UNTESTABLE
    if any(t.verdict == REVERSED for t in tests):  # for an equality: some value does change the metric
        return REVERSED
    return HOLDS if all(t.verdict == HOLDS for t in tests) else NOT_SEPARATED


def judge_rows(claim: Claim, rows: pd.DataFrame, config_columns: list[str], where: str | None) -> Verdict:
    """The verdict of ``claim`` on ``rows`` (completed trial rows, or artifact rows), filtered by ``where``."""
    missing = [c for c in claim.columns() if c not in rows.columns]
    if missing:
        return Verdict(claim, UNTESTABLE, reason=f"no column {', '.join(missing)} in the rows")
    try:
        rows = _filtered(rows, where)
    except Exception as e:  # noqa: BLE001 - a bad filter is the claim's problem, shown in its row
        return Verdict(claim, UNTESTABLE, reason=f"filter `{where}` failed: {type(e).__name__}: {e}")
    if rows.empty:
        return Verdict(claim, UNTESTABLE, reason="no rows match")
    why = _requirements(claim, rows)
    if why:
        return Verdict(claim, UNTESTABLE, reason=why)
    reason = ""
    if claim.kind in ("order", "equal"):
        tests = _order(claim, rows, config_columns)
    elif claim.kind == "threshold":
        tests = _threshold(claim, rows)
    elif claim.kind == "correlation":
        tests = _correlation(claim, rows)
    else:
        tests, reason = _counts(claim, rows)
    verdict = _combine(tests)
    if verdict == UNTESTABLE and not reason:
        reason = "; ".join(f"{t.label}: {t.rule}" for t in tests if t.verdict == UNTESTABLE)
    return Verdict(claim, verdict, tests, reason)


def judge(claim: Claim, rows: pd.DataFrame, config_columns: list[str], artifacts=None) -> Verdict:
    """The claim's verdict on a study's completed rows; when it has a ``where`` filter and the
    unfiltered rows give another verdict, that one rides along as ``unfiltered``."""
    if claim.artifact:
        points = artifacts(claim.artifact) if artifacts else None
        if points is None or points.empty or "trial_id" not in points.columns:
            return Verdict(claim, UNTESTABLE, reason=f"no artifact {claim.artifact!r} in the results")
        own = [c for c in rows.columns if c == "trial_id" or c not in points.columns]
        rows = points.merge(rows[own], on="trial_id", how="inner")
    if claim.scope:
        try:
            rows = rows.query(claim.scope, engine="python")
        except Exception as e:  # noqa: BLE001 - shown in the claim's row
            return Verdict(claim, UNTESTABLE, reason=f"scope `{claim.scope}` failed: {type(e).__name__}: {e}")
    v = judge_rows(claim, rows, config_columns, claim.where)
    if claim.where:
        u = judge_rows(claim, rows, config_columns, None)
        if u.verdict != v.verdict:
            v.unfiltered = u
    return v


def judge_all(claims: list[Claim], rows: pd.DataFrame, config_columns: list[str], artifacts=None) -> list[Verdict]:
    return [judge(c, rows, config_columns, artifacts) for c in claims]


def tally(verdicts: list[Verdict]) -> dict[str, int]:
    return {v: sum(1 for x in verdicts if x.verdict == v) for v in VERDICTS}


# ---------------------------------------------------------------------------- text
def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.4g}"


def describe_test(t: Test) -> str:
    """"4 > 2: n 54, +3.01 [1.2, 4.9]" or "... p 0.031"."""
    est = fmt(t.estimate)
    if t.low is not None:
        return f"{t.label}: n {t.n}, {est} [{fmt(t.low)}, {fmt(t.high)}]"
    if t.p is not None:
        return f"{t.label}: n {t.n}, {est}, p {t.p:.3g}"
    return f"{t.label}: n {t.n}"


def ours(v: Verdict) -> str:
    parts = [describe_test(t) for t in v.tests]
    if v.reason:
        parts.append(v.reason)
    return "; ".join(parts) or "–"


def row_text(v: Verdict, quote: str = "`") -> tuple[str, str]:
    """(ours, verdict suffix) as the claims table shows them: what the rows gave and the rows it
    read (scope and filter, each quoted with ``quote``); when the filter changes the verdict, the
    unfiltered result is added to ours and " (without the filter: ...)" is the suffix."""
    c = v.claim
    rows = "; ".join(f"{k} {quote}{q}{quote}" for k, q in (("scope", c.scope), ("filter", c.where)) if q)
    text = ours(v) + (f" (rows: {rows})" if rows else "")
    if v.unfiltered is None:
        return text, ""
    return f"{text}; without the filter: {ours(v.unfiltered)}", f" (without the filter: {v.unfiltered.verdict})"
