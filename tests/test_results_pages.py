"""docs/results/ is generated, never typed: every page there is `overnight report` over a
committed export in docs/results/data/ (orchestrator/results/export.py), and the index is `overnight
findings`. This test regenerates each from the committed data and the current study files and
fails on any difference, so a page cannot drift from its rows, its claims or the code."""
from __future__ import annotations


import pytest

from tests.conftest import ROOT

RESULTS = ROOT / "docs" / "results"
DATA = RESULTS / "data"
EXPORTS = sorted(p for p in DATA.glob("*.parquet") if p.name.count(".") == 1)


def test_there_is_committed_evidence_to_regenerate():
    assert EXPORTS, "no committed exports in docs/results/data/"
    pages = sorted(p.name for p in RESULTS.glob("*.md") if p.name != "README.md")
    assert pages == sorted(f"{p.stem}.md" for p in EXPORTS), \
        "every page in docs/results/ must come from an export in docs/results/data/ (others go to hand-written/)"


@pytest.mark.parametrize("export", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_each_page_is_the_report_of_its_committed_export(export, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(ROOT)  # the current study file (claims, notes, tables) is configs/studies/<study>.yaml
    out = tmp_path / f"{export.stem}.md"
    code, _, err = cli("report", export, "--out", out)
    assert code == 0, err
    committed = RESULTS / f"{export.stem}.md"
    assert out.read_text() == committed.read_text(), \
        f"{committed.relative_to(ROOT)} differs from its regenerated report: `overnight report {export.relative_to(ROOT)} " \
        f"--out {committed.relative_to(ROOT)}` (or `make results STUDY=...`)"
    plots = sorted(p.name for p in (tmp_path / export.stem).glob("*.png"))
    assert plots == sorted(p.name for p in (RESULTS / export.stem).glob("*.png"))


def test_the_index_is_generated_from_the_same_data(cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = cli("findings", "--data", DATA, "--studies", ROOT / "configs" / "studies")
    assert code == 0, err
    assert out == (RESULTS / "README.md").read_text(), "docs/results/README.md: `overnight findings --out docs/results/README.md`"
