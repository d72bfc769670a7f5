"""report.html in a real browser (Debian's chromium driven by playwright), its links, and the
atomic report folder (issue 24, part 4). All slow: each builds a report.

The screenshot of the sorted and filtered page is saved as ``report-sorted-filtered.png`` in
the test's temporary folder (and copied to $POOLBENCH_SCREENSHOT_DIR when set, for a look).
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from poolbench.errors import UsageError
from poolbench.report import build_report
from poolbench.report import publish as publish_module
from poolbench.store import ResultStore

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# top-1 error % per (dataset, pool) at seeds 0 and 1: on shapes lift < max < avg, on photos
# avg < max < lift; the means are what the tables must show.
ERRORS = {("shapes", "max"): (10.0, 11.0), ("shapes", "avg"): (20.0, 21.0), ("shapes", "lift"): (5.0, 6.0),
          ("photos", "max"): (8.0, 9.0), ("photos", "avg"): (4.0, 5.0), ("photos", "lift"): (12.0, 13.0)}


@pytest.fixture(scope="module")
def report(tmp_path_factory, make_cell):
    root = tmp_path_factory.mktemp("results")
    for (dataset, pool), errs in ERRORS.items():
        for seed, err in enumerate(errs):
            chash, cell, rows, arrays = make_cell(pool, dataset, seed, err, curve=(50.0, err))
            ResultStore(root).write("accuracy", chash, cell, rows, arrays)
    out = tmp_path_factory.mktemp("report")
    build_report(str(root), str(out), title="Browser test", illustrations=False)
    return out


def _results_of(report: Path) -> Path:
    return next(report.parent.glob("results*"))


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "action", "srcset", "data")]


def test_the_page_requests_nothing_outside_its_folder(report):
    html = (report / "report.html").read_text()
    parser = _Refs()
    parser.feed(html)
    assert any(tag == "img" for tag, _, _ in parser.refs)
    for tag, attr, value in parser.refs:
        if value.startswith(("data:", "#")):
            continue
        assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//|^/|\.\.", value), (tag, attr, value)
        assert (report / value).is_file(), (tag, attr, value)
    assert "url(" not in html and "@import" not in html


def _browser():
    """playwright on the system chromium; a skip where either is missing, except in CI
    (POOLBENCH_REQUIRE_BROWSER=1, set by .ci/run), where it is a failure."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "no playwright: pip install -e '.[test]'"
    if not Path(CHROMIUM).exists():
        missing = "no chromium: .ci/run installs Debian's chromium"
    if missing:
        if os.environ.get("POOLBENCH_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    return sync_playwright()


def _pools(table):
    """The pools of ``table``'s visible rows, top to bottom."""
    return table.evaluate("t => Array.from(t.tBodies[0].rows).filter(r => r.offsetParent !== null)"
                          ".map(r => r.dataset.pool)")


def test_sort_and_filter_in_chromium(report, tmp_path):
    value_table = "table[data-pools-in='rows']"       # each group's value table comes first
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((report / "report.html").as_uri())
        shapes = page.locator(f".group[data-dataset='shapes'] {value_table}").first
        assert _pools(shapes) == ["avg", "lift", "max"]                    # the markdown's order
        header = shapes.locator("th", has_text="top-1 err %")
        header.click()
        assert _pools(shapes) == ["lift", "max", "avg"]                    # 5.5 < 10.5 < 20.5
        cells = shapes.locator("tbody tr td:nth-child(2)").all_inner_texts()
        assert [c.split()[0] for c in cells] == ["5.50", "10.50", "20.50"]
        header.click()
        assert _pools(shapes) == ["avg", "max", "lift"]
        page.select_option("select[name=pool]", "lift")
        page.select_option("select[name=dataset]", "photos")
        assert page.locator(".group[data-dataset='shapes']").first.is_hidden()
        photos = page.locator(f".group[data-dataset='photos'] {value_table}").first
        assert _pools(photos) == ["lift"]
        verdict = photos.locator("tr[data-pool=lift] td").last.inner_text()
        assert verdict.startswith("top-1 err %: Δ +4.00") and "(2 seeds): resolved, worse" in verdict, verdict
        assert page.url.endswith("#dataset=photos&pool=lift")
        shot = tmp_path / "report-sorted-filtered.png"
        page.evaluate("window.scrollTo(0, document.getElementById('clean-accuracy').offsetTop - 90)")
        page.screenshot(path=str(shot))
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("POOLBENCH_SCREENSHOT_DIR"):
        shutil.copy(shot, os.environ["POOLBENCH_SCREENSHOT_DIR"])


def test_without_javascript_the_tables_are_in_the_markdowns_order(report):
    markdown = (report / "report.md").read_text()
    expected = re.findall(r"^\| (avg|lift|max)(?: †)? +\|", markdown, flags=re.MULTILINE)
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(java_script_enabled=False).new_page()
        page.goto((report / "report.html").as_uri())
        assert page.locator("#filters").is_hidden()
        shown = page.eval_on_selector_all(
            "table[data-pools-in='rows'] tbody tr", "rows => rows.map(r => r.dataset.pool)")
        browser.close()
    assert expected and shown == expected


def test_a_report_replaces_only_its_own_files(report, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(report, out)
    (out / "fig-mine.png").write_bytes(b"my figure")            # a user's own files
    (out / "README.md").write_text("mine")
    (out / "fig-old-linked.png").write_bytes(b"old")            # an earlier report's figure
    md = out / "report.md"
    md.write_text(md.read_text() + "\n![old](fig-old-linked.png)\n")
    build_report(str(_results_of(report)), str(out), illustrations=False)
    assert (out / "fig-mine.png").read_bytes() == b"my figure"
    assert (out / "README.md").read_text() == "mine"
    assert not (out / "fig-old-linked.png").exists()
    assert (out / "report.html").is_file() and (out / "results.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_an_interrupted_report_leaves_the_old_one_intact(report, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(report, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(tmp, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr("poolbench.report.build.publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_report(str(_results_of(report)), str(out), illustrations=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert publish_module.TEMP_PREFIX not in " ".join(p.name for p in out.iterdir())


def test_a_full_disk_is_one_line_and_keeps_the_old_report(report, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(report, out)
    abandoned = out / f"{publish_module.TEMP_PREFIX}999999999-x"    # a build killed outright
    abandoned.mkdir()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def full(frame, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("poolbench.report.build.write_csv", full)
    with pytest.raises(UsageError) as err:
        build_report(str(_results_of(report)), str(out), illustrations=False)
    assert "\n" not in str(err.value) and "No space left on device" in str(err.value)
    assert str(out) in str(err.value) and err.value.exit_code == 1   # the machine's failure, not the input's
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
