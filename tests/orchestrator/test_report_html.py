"""`overnight report DIR --html FILE` (one self-contained page: header, every table, every plot
embedded) opened in a real headless Chromium: every table and image is there and every image is
decoded; a screenshot is taken. And `overnight report A B`: the tables of two studies side by
side with their differences."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.orchestrator.report_data import LADDER_GRID, ladder_rows, write_study

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# marks the page once loaded (synchronously, so the DOM dump cannot come first): how many images
# there are, how many are decoded (loaded, with a size, and drawn onto a canvas with some
# non-white pixels), their widths, the tables and the section titles
PROBE = """<pre id="probe"></pre><script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const painted = imgs.filter(i => {
    if (!(i.complete && i.naturalWidth > 0)) return false;
    const c = document.createElement("canvas");
    c.width = i.naturalWidth; c.height = i.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(i, 0, 0);
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    for (let k = 0; k < px.length; k += 4) if (px[k] < 200 || px[k + 1] < 200 || px[k + 2] < 200) return true;
    return false;
  });
  document.getElementById("probe").textContent = JSON.stringify({
    images: imgs.length, decoded: painted.length, widths: imgs.map(i => i.naturalWidth),
    tables: document.querySelectorAll("table.data").length,
    sections: [...document.querySelectorAll("section h2")].map(h => h.textContent)});
});
</script>"""

ITEMS = [
    {"title": "Gamma by alpha and method", "by": ["alpha", "method"], "values": ["gamma", "rho"]},
    {"plot": "heatmap", "title": "rho by alpha and depth per method", "x": "alpha", "y": "depth", "value": "rho",
     "facet": "method"},
    {"title": "CB against DFA and SB", "by": ["alpha"], "values": ["gamma"],
     "compare": {"column": "method", "pairs": [["cb", "dfa"], ["cb", "sb"]], "over": ["depth"]}, "stats": ["min", "max"]},
    {"plot": "line", "title": "Gamma by depth", "x": "depth", "y": "gamma", "hue": "method"},
    {"title": "Best per alpha", "best": {"by": ["alpha"], "metric": "rho"}, "columns": ["method", "depth", "rho"]},
]


def browser() -> str | None:
    found = os.environ.get("OVERNIGHT_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    return found


def chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def ladder_study(tmp_path: Path, name: str = "ladderhtml", scale: str = "fast", rows=None):
    return write_study(str(tmp_path / "res" / name / scale), name, rows or ladder_rows(), report=ITEMS, scale=scale,
                       grid=LADDER_GRID)


def test_html_page_is_self_contained(tmp_path, cli):
    ladder_study(tmp_path)
    code, out, err = cli("report", tmp_path / "res", "--html", tmp_path / "r.html")
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert page.count('<img alt="') == 2 and page.count('src="data:image/png;base64,') == 2
    assert not re.search(r'(src|href)="(?!data:)', page), "the page must not load anything from outside"
    assert "<script" not in page
    assert page.count('<table class="data">') == 3
    for words in ("ladderhtml — fast scale", "32 completed", "Compute", "Workload", "<code>synthetic</code>",
                  "<td>Data</td><td>not recorded by the workload (32 rows)</td>"):
        assert words in page
    assert "![rho by alpha and depth per method](" in out   # the Markdown printed beside it


def test_html_page_in_a_headless_browser(tmp_path, cli):
    exe = browser()
    if exe is None:
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    ladder_study(tmp_path)
    code, _, err = cli("report", tmp_path / "res", "--html", tmp_path / "r.html")
    assert code == 0, err
    probed = tmp_path / "probed.html"
    probed.write_text((tmp_path / "r.html").read_text().replace("</body>", PROBE + "</body>"))
    for _ in range(3):  # a machine under load may dump the DOM before the page's load event
        dom = chromium(exe, tmp_path, "--virtual-time-budget=10000", "--run-all-compositor-stages-before-draw",
                       "--dump-dom", probed.as_uri())
        m = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
        if m and m.group(1):
            break
    assert m and m.group(1), f"the page did not finish loading in {exe}: {dom.stderr[-2000:]}"
    seen = json.loads(m.group(1))
    assert seen["images"] == 2 and seen["decoded"] == 2 and min(seen["widths"]) > 300, seen
    assert seen["tables"] == 3
    assert seen["sections"] == [i["title"] for i in ITEMS]
    shot = tmp_path / "page.png"
    res = chromium(exe, tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", (tmp_path / "r.html").as_uri())
    assert shot.exists(), res.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2400, 1280) and pixels[..., :3].std() > 0.05   # a rendered page, not a blank one


def test_two_studies_side_by_side_with_differences(tmp_path, cli):
    a = ladder_study(tmp_path, "ladder_a")
    rows_b = ladder_rows()
    for r in rows_b:
        r["gamma"] += 0.1 if r["method"] == "cb" else 0.0
        r["trial_id"] = "b" + r["trial_id"]
    b = write_study(str(tmp_path / "res" / "ladder_b" / "fast"), "ladder_b", rows_b[:-4], report=[], grid=LADDER_GRID)
    code, out, err = cli("report", a.location, b.location, "--html", tmp_path / "cmp.html")
    assert code == 0, err
    assert "# Comparison: A = ladder_a (fast), B = ladder_b (fast)" in out
    section = out.split("## Gamma by alpha and method")[1].split("##")[0]
    header = [c.strip() for c in section.strip().splitlines()[0].strip("|").split("|")]
    assert header[:8] == ["alpha", "method", "gamma mean [A]", "gamma mean [B]", "Δ gamma mean",
                          "gamma std [A]", "gamma std [B]", "Δ gamma std"]
    table = pd.DataFrame([[c.strip() for c in line.strip("|").split("|")] for line in section.strip().splitlines()[2:]
                          if line.startswith("|")], columns=header)
    cb = table[(table.alpha == "0") & (table.method == "cb")].iloc[0]
    assert float(cb["Δ gamma mean"]) == pytest.approx(0.1, abs=0.006)
    dfa = table[(table.alpha == "0") & (table.method == "dfa")].iloc[0]
    assert float(dfa["Δ gamma mean"]) == 0
    bp = table[(table.alpha == "1") & (table.method == "bp")].iloc[0]   # B lacks alpha 1, depth 4 of cb and bp
    assert (bp["gamma n [A]"], bp["gamma n [B]"], bp["Δ gamma n"]) == ("4", "2", "-2")
    best = out.split("## Best per alpha")[1]
    assert "method [A]" in best and "Δ method" not in best and "Δ depth" not in best and "Δ rho" in best
    page = (tmp_path / "cmp.html").read_text()
    assert page.count('<table class="data">') == 3 and "<img" not in page


def test_report_takes_at_most_two_locations(tmp_path, cli):
    ladder_study(tmp_path)
    code, _, err = cli("report", tmp_path / "res", tmp_path / "res", tmp_path / "res")
    assert code == 2 and "two study directories" in err
    ladder_study(tmp_path, "second")
    code, _, err = cli("report", tmp_path / "res", tmp_path / "res" / "second" / "fast")
    assert code == 2 and "found 2 studies" in err
