"""`kr report`: built from a run directory alone, every section present, every number equal to
results.json, self-contained HTML, several runs aggregated."""

import json
import re
import shutil
import statistics

import pytest
from click.testing import CliRunner

from kr.cli import cli
from kr.errors import KRError
from kr.report import write_report
from kr.report.document import SECTIONS, Run, privacy_points


@pytest.fixture
def run(finished_run):
    return finished_run[:2]


def _md_rows(md: str, first: str) -> dict[str, list[str]]:
    """The Markdown table whose header starts with `first`, as {method: cells}."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[1]] = cells
    return rows


@pytest.mark.slow  # end to end: a whole tiny run
def test_kr_run_ends_with_the_report(run):
    path, results = run
    assert results["report"] == str(path / "report" / "report.html")
    assert (path / "report" / "report.md").is_file() and (path / "report" / "classes.png").is_file()
    import matplotlib.image as mpimg

    # Real rows beside synthetic rows, enlarged 4× (tests/test_quality.py checks the drawing)
    classes = mpimg.imread(path / "report" / "classes.png")
    grid = mpimg.imread(path / "generator" / "checkpoints" / results["selection"]["selected"] / "grid.png")
    assert classes.shape[0] >= 4 * grid.shape[0] and classes.shape[1] >= 4 * grid.shape[1]


def test_report_from_the_directory_alone_has_every_section_and_results_numbers(run, tmp_path):
    path, results = run
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    for weights in copy.rglob("*.safetensors"):  # nothing may be recomputed: no model to load
        weights.unlink()
    shutil.rmtree(copy / "report")
    html = write_report([copy]).read_text()
    md = (copy / "report" / "report.md").read_text()
    for anchor, title in SECTIONS:
        assert f'id="{anchor}"' in html and title in md
    rows = _md_rows(md, "dataset")
    assert set(rows) == {"real", "kr", "synthetic", "dpsgd-eps4"}
    for method, m in results["methods"].items():
        assert rows[method][3] == f"{m['test']['acc']:.4f}" and rows[method][4] == f"{m['test']['auc']:.4f}"
        if method != "real":
            gap = 100 * (m["test"]["acc"] - results["methods"]["real"]["test"]["acc"])
            assert rows[method][5] == f"{gap:.2f}"
        best = max(results["audit_shipped"][method].values(), key=lambda r: r["auc"])
        assert rows[method][6].startswith(f"{best['auc']:.4f} (") and "exp. 2, 1 run)" in rows[method][6]
    assert "ε = " in rows["dpsgd-eps4"][7]
    points = {p["method"]: p for p in privacy_points([Run(copy)])}
    assert points["dpsgd-eps4"]["epsilon"] == 4.0 and points["kr"]["epsilon"] is None  # DP: a curve
    audit = [line for line in md.splitlines() if line.startswith("| 2: shipped model | kr | loss |")]
    r = results["audit_shipped"]["kr"]["loss"]
    assert len(audit) == 1 and f"{r['auc']:.4f} [{r['auc_ci'][0]:.4f}, {r['auc_ci'][1]:.4f}]" in audit[0]
    assert f"{results['memorisation']['pixel']['median_ratio']:.4f}" in md
    # Generator quality: every checkpoint by the three judges, each named, numbers from results.json.
    quality = _md_rows(md, "checkpoint")
    for c in results["generator"]["quality"]["checkpoints"]:
        cells = next(r for r in quality.values() if r[0] == c["name"])
        assert cells[2] == f"{c['downstream']['acc']:.4f}" and cells[3] == f"{c['judge']['agreement']:.3f}"
        assert cells[7] == f"{c['teacher']['agreement']:.3f}"
    assert "no generator or student is trained against" in md and "flatters" in md


def test_html_is_self_contained_and_markdown_figures_exist(run):
    path, _ = run
    html = (path / "report" / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in html and "https://" not in html  # opens offline: nothing fetched
    md = (path / "report" / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(sources)
    assert all((path / "report" / link).is_file() for link in links)
    assert "not available" not in md  # a tiny run has every figure


def test_several_runs_aggregate_mean_and_std(run, tmp_path):
    path, results = run
    other = tmp_path / "seed1"
    shutil.copytree(path, other)
    r1 = json.loads((other / "results.json").read_text())
    r1["seed"], r1["methods"]["kr"]["test"]["acc"] = 1, 0.25
    (other / "results.json").write_text(json.dumps(r1))
    write_report([path, other], tmp_path / "both")
    rows = _md_rows((tmp_path / "both" / "report.md").read_text(), "dataset")
    accs = [results["methods"]["kr"]["test"]["acc"], 0.25]
    assert rows["kr"][2] == "2"
    assert rows["kr"][3] == f"{statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}"


def test_cli_report_and_its_errors(run, tmp_path):
    path, _ = run
    out = CliRunner().invoke(cli, ["report", str(path), "--out", str(tmp_path / "r")])
    assert out.exit_code == 0 and (tmp_path / "r" / "report.html").is_file()
    with pytest.raises(KRError, match="--out"):
        CliRunner().invoke(cli, ["report", str(path), str(path)], standalone_mode=False,
                           catch_exceptions=False)
    with pytest.raises(KRError, match="results.json"):
        write_report([tmp_path])


def test_a_browser_shows_what_a_reader_reads(run, tmp_path):
    """The report in headless Chromium: the results table holds every method and its numbers in
    the rendered page, every figure loaded (no broken image), and each figure's panel on screen
    is drawn, not blank."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (Debian package chromium; CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (the test extra)")
    path, results = run
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto((path / "report" / "report.html").as_uri(), wait_until="load")
            table = page.locator("table").first.inner_text()
            for method, m in results["methods"].items():
                assert method in table and f"{m['test']['acc']:.4f}" in table, method
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete && e.naturalWidth > 0, e.alt, e.src])")
            assert len(images) >= 5 and all(ok for ok, _, _ in images), [n for ok, n, _ in images if not ok]
            blank = []
            for i, (_, name, src) in enumerate(images):
                # the bytes the page carries decode completely (a truncated PNG still has a width) …
                Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).load()
                # … and what the browser drew is a figure, not a flat panel: at least 2 % of its
                # pixels away from its background (measured: figures 5–80 %, a damaged one < 1 %)
                img = page.locator("img").nth(i)
                img.scroll_into_view_if_needed()
                shot = np.asarray(Image.open(io.BytesIO(img.screenshot())).convert("L"), dtype=float)
                background = np.bincount(shot.astype(int).ravel()).argmax()
                if (np.abs(shot - background) > 24).mean() < 0.02:
                    blank.append(name)
            assert not blank, blank
        finally:
            browser.close()

def test_a_shareable_report_holds_no_real_image_and_says_so_first(run, tmp_path):
    import base64

    path, results = run
    out = write_report([path], tmp_path / "share", shareable=True)
    html, md = out.read_text(), (tmp_path / "share" / "report.md").read_text()
    assert md.splitlines()[0].startswith("# kr report (shareable: no real images)")
    assert md.splitlines()[2].startswith("Shareable: this report leaves out every real image")
    real = [path / "report" / "classes.png", path / "audit" / "shipped" / "closest_pairs.png"]
    for figure in real:  # neither embedded in the HTML nor copied beside the Markdown
        assert figure.is_file() and base64.b64encode(figure.read_bytes()).decode() not in html
    names = {p.name for p in (tmp_path / "share" / "figures").iterdir()}
    assert not any(n.endswith(("classes.png", "closest_pairs.png", "real_grid.png")) for n in names)
    assert "left out of this shareable report" in md
    # synthetic samples only where the memorisation check searched and found no near-copy
    copies = results["memorisation"]["copies"]["near_copies"]
    assert ("grid.png" in " ".join(names)) == (copies == 0)
    # the run's own report is untouched, and still warns
    assert "share it only where the training data itself may go" in (path / "report" / "report.md").read_text()


def test_provenance_stamps_each_command_that_opened_the_run_apart_from_the_report(run, tmp_path):
    from kr.report.document import _history_rows

    manifest = {"created": "2026-01-01T10:00:00+0000", "updated": "2026-01-02T09:00:00+0000",
                "history": [{"at": "2026-01-01T10:00:00+0000", "command": ["/venv/bin/kr", "run", "--dataset", "digits"]},
                            {"at": "2026-01-02T09:00:00+0000", "command": ["/src/kr/__main__.py", "audit", "RUN"]}]}
    rows = dict(_history_rows(manifest)[:2])
    assert rows == {"run created": "2026-01-01T10:00:00+0000 (`kr run --dataset digits`)",
                    "then": "2026-01-02T09:00:00+0000 (`kr audit RUN`)"}
    assert _history_rows(manifest)[-1][0] == "report written"
    # the run a test wrote through the library: one entry, the process's own argv
    path, _ = run
    history = json.loads((path / "manifest.json").read_text())["history"]
    assert len(history) == 1 and isinstance(history[0]["command"], list) and history[0]["at"]
