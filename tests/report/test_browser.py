"""The static report and the published leaderboard site in a real browser (headless Chromium, playwright).

Pages: a report built from test_build's fixture (its provenance says evidence "smoke", so the smoke banner
shows), the published site built from a copy of results/published, and — where it exists on this machine —
the smoke DAG's report results/smoke/report/index.html. Each is opened from file:// at desktop (1400×900)
and phone (390×844) width and checked: no console errors, page errors or failed requests; every image
loads; the first track's at-a-glance leaderboard is near the top and each track's starts near its
section's top; clicking a numeric heading of a glance table sorts it (missing last) and a second click
reverses; every local link resolves (file and #fragment). Full-page screenshots go to $LOSSBENCH_SCREENSHOTS
(default: pytest's tmp folder); run with -s to see their paths and the page heights.

Uses the system Chromium (Debian `chromium`), never a downloaded one. Skipped when playwright or Chromium
is missing, unless LOSSBENCH_REQUIRE_BROWSER=1 (CI), which makes that a failure.
"""
from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from lossbench.report.screenshot import find_browser

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "results" / "published"
SMOKE_REPORT = ROOT / "results" / "smoke" / "report" / "index.html"
PAGES = ("report", "site", "smoke")
VIEWPORTS = {"desktop": (1400, 900), "phone": (390, 844)}
FIRST_GLANCE_MAX_TOP = 1000  # px from the page top to the first track's glance table (desktop)
GLANCE_MAX_OFFSET = 500  # px from a track section's top to its glance table (desktop)


def _unavailable(reason: str):
    if os.environ.get("LOSSBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LOSSBENCH_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the whole module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright; it uses the system Chromium)")
    exe = find_browser()
    if exe is None:
        _unavailable("no Chromium on PATH (Debian: apt-get install -y chromium)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:  # a browser too old or broken for this playwright
            _unavailable(f"Chromium at {exe} does not start under playwright: {e}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("LOSSBENCH_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _build(name: str, tmp_path_factory) -> Path:
    """index.html of the page `name`."""
    if name == "report":
        from lossbench.report.build import build_report
        from tests.report.test_build import write_fixture

        root = tmp_path_factory.mktemp("browser_report")
        results = write_fixture(root / "results")
        prov = json.loads((results / "provenance.json").read_text())
        (results / "provenance.json").write_text(json.dumps({**prov, "evidence": "smoke"}))
        return build_report(results, root / "report", title="Fixture report (browser test)")
    if name == "site":
        from lossbench.report.site import build_site

        copy = tmp_path_factory.mktemp("browser_site") / "published"
        shutil.copytree(PUBLISHED, copy,  # the sets and their reports, not a site page built before
                        ignore=lambda d, names: ["index.html"] if Path(d) == PUBLISHED else [])
        return build_site(copy)
    if not SMOKE_REPORT.is_file():
        pytest.skip(f"no smoke report on this machine ({SMOKE_REPORT.relative_to(ROOT)}; `make smoke`)")
    return SMOKE_REPORT


# --- one visit per (page, viewport): everything the checks read, gathered once -----------------------

_IMAGES_JS = """async () => {
  const out = [];
  for (const img of Array.from(document.images)) {
    img.scrollIntoView({block: "center"});
    if (!img.complete) {
      await new Promise(res => { img.addEventListener("load", res, {once: true});
                                 img.addEventListener("error", res, {once: true}); setTimeout(res, 5000); });
    }
    out.push([img.getAttribute("src"), img.naturalWidth]);
  }
  window.scrollTo(0, 0);
  return out;
}"""

_WIDE_JS = """() => {
  // the outermost elements reaching past the viewport's right edge (what makes the page scroll sideways)
  const w = document.documentElement.clientWidth, out = [];
  const past = el => el.getBoundingClientRect().right > w + 1;
  const clipped = el => {  // inside a box that scrolls or clips sideways (the page does not widen)
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement)
      if (getComputedStyle(a).overflowX !== "visible") return true;
    return false;
  };
  for (const el of document.body.querySelectorAll("*")) {
    if (!past(el) || (el.parentElement !== document.body && past(el.parentElement)) || clipped(el)) continue;
    const r = el.getBoundingClientRect(), where = el.parentElement.closest("[id]");
    out.push(`<${el.tagName.toLowerCase()}${el.id ? " id=" + el.id : ""}${el.getAttribute("class") ? " class='" + el.getAttribute("class") + "'" : ""}>` +
             `${where ? " in #" + where.id : ""} ${Math.round(r.width)} px wide, right edge ${Math.round(r.right)} px`);
  }
  return out.slice(0, 8);
}"""

_LAYOUT_JS = """() => {
  const top = el => el.getBoundingClientRect().top + window.scrollY;
  return Array.from(document.querySelectorAll("section[id^='track-']")).map(s => {
    const g = s.querySelector("table.glance");
    return {section: s.id, top: top(s), glance: g ? g.id : null, glance_top: g ? top(g) : null};
  });
}"""


def _visit(browser, index: Path, name: str, viewport: str, shots: Path) -> dict:
    w, h = VIEWPORTS[viewport]
    ctx = browser.new_context(viewport={"width": w, "height": h})
    page = ctx.new_page()
    rec = {"index": index, "viewport": viewport, "console": [], "pageerrors": [], "failed": []}
    page.on("console", lambda m: m.type == "error" and rec["console"].append(
        f"{m.text} ({m.location.get('url', '')}:{m.location.get('lineNumber', '')})"))
    page.on("pageerror", lambda e: rec["pageerrors"].append(str(e)))
    page.on("requestfailed", lambda r: rec["failed"].append(f"{r.url}: {r.failure}"))
    try:
        page.goto(index.resolve().as_uri(), wait_until="load")
        rec["images"] = page.evaluate(_IMAGES_JS)  # scrolls each into view: lazy ones load too
        rec["layout"] = page.evaluate(_LAYOUT_JS)
        rec["hrefs"] = page.eval_on_selector_all("a[href]", "els => els.map(a => a.getAttribute('href'))")
        banner = page.locator("#smoke-banner")
        rec["banner"] = banner.count() > 0 and banner.first.is_visible()
        rec["height"] = page.evaluate("document.documentElement.scrollHeight")
        rec["overflow_x"] = page.evaluate("document.documentElement.scrollWidth") - w
        rec["too_wide"] = page.evaluate(_WIDE_JS) if rec["overflow_x"] > 1 else []
        rec["screenshot"] = shots / f"{name}-{viewport}.png"
        page.screenshot(path=str(rec["screenshot"]), full_page=True)
    finally:
        ctx.close()
    print(f"\n[browser] {name} @ {viewport} ({w}×{h}): height {rec['height']} px, {len(rec['images'])} images, "
          f"{len(rec['hrefs'])} links; screenshot {rec['screenshot']}")
    return rec


# --- checks: each returns its problems, worded to find them on the page -------------------------------

def _errors(rec: dict) -> list[str]:
    at = f"at {rec['viewport']} width"
    return ([f"console error {at}: {m}" for m in rec["console"]] + [f"page error {at}: {m}" for m in rec["pageerrors"]]
            + [f"failed request {at}: {m}" for m in rec["failed"]])


def _images(rec: dict) -> list[str]:
    return [f"image did not load at {rec['viewport']} width: <img src={src!r}>" for src, width in rec["images"]
            if not width]


def _glance_layout(rec: dict) -> list[str]:
    """Desktop: the first track's glance table within FIRST_GLANCE_MAX_TOP px of the page top, each track's
    within GLANCE_MAX_OFFSET px of its section's top, named glance-<track> (report) or glance-<track>-<set>."""
    tracks = rec["layout"]
    if not tracks:
        return ["no <section id='track-…'>"]
    problems = [f"#{t['section']} has no table.glance" for t in tracks if t["glance"] is None]
    tracks = [t for t in tracks if t["glance"] is not None]
    for t in tracks:
        name = t["section"][len("track-"):]
        if not (t["glance"] == f"glance-{name}" or t["glance"].startswith(f"glance-{name}-")):
            problems.append(f"#{t['section']}'s glance table is #{t['glance']}, not #glance-{name}[-<set>]")
        if t["glance_top"] - t["top"] > GLANCE_MAX_OFFSET:
            problems.append(f"#{t['glance']} starts {t['glance_top'] - t['top']:.0f} px below the top of "
                            f"#{t['section']} (> {GLANCE_MAX_OFFSET} px) at desktop width")
    if tracks and rec["layout"][0]["glance"] is not None and tracks[0]["glance_top"] > FIRST_GLANCE_MAX_TOP:
        problems.append(f"the first track's glance table #{tracks[0]['glance']} starts at "
                        f"{tracks[0]['glance_top']:.0f} px (> {FIRST_GLANCE_MAX_TOP} px) at desktop width")
    return problems


def _banner(rec: dict, name: str) -> list[str]:
    if name == "site":  # the smoke profile never appears on the published site
        return ["the published site shows a #smoke-banner"] if rec["banner"] else []
    # the fixture's provenance says evidence "smoke"; results/smoke is the smoke profile
    return [] if rec["banner"] else ["no visible #smoke-banner on a smoke report"]


def _phone_width(rec: dict) -> list[str]:
    """Wide tables scroll inside their own box; the page itself does not scroll sideways on a phone."""
    return ([f"the page is {rec['overflow_x']} px wider than the {VIEWPORTS['phone'][0]} px phone viewport "
             f"(it scrolls sideways); too wide: {rec['too_wide']}"] if rec["overflow_x"] > 1 else [])


_COLUMN_JS = """([id, i]) => {
  const t = document.getElementById(id);
  return Array.from(t.tBodies[0].rows).map(r => {
    const c = r.cells[i]; const v = c.hasAttribute("data-v") ? c.getAttribute("data-v") : c.textContent.trim();
    return [r.cells[0].textContent.trim(), v];
  });
}"""


def _order_problem(rows: list, ascending: bool) -> str | None:
    """Why a numeric column's values (the sort key the page reads: data-v, else the text) are not sorted
    with missing values last, or None."""
    values = []
    for _, v in rows:
        if v.strip() in ("", "\u2014"):
            values.append(None)
            continue
        try:
            values.append(float(v))
        except ValueError:
            return f"sort value {v!r} is not a number"
    present = [v for v in values if v is not None]
    if any(v is not None for v in values[len(present):]):
        return f"missing values are not last: {values}"
    pairs = list(zip(present, present[1:]))
    if not (all(a <= b for a, b in pairs) if ascending else all(a >= b for a, b in pairs)):
        return f"not {'ascending' if ascending else 'descending'}: {values}"
    return None


def _sorting(browser, index: Path) -> list[str]:
    """Click each numeric heading of every glance table twice: sorted (per aria-sort, missing last), then
    the other way; no row lost."""
    ctx = browser.new_context(viewport={"width": VIEWPORTS["desktop"][0], "height": VIEWPORTS["desktop"][1]})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    problems = []
    try:
        page.goto(index.resolve().as_uri(), wait_until="load")
        ids = page.eval_on_selector_all("table.glance", "ts => ts.map(t => t.id)")
        if not ids:
            return ["no table.glance to sort"]
        for tid in ids:
            table = page.locator(f'table[id="{tid}"]')
            if "sortable" not in (table.get_attribute("class") or "").split():
                problems.append(f"#{tid} is not table.sortable")
                continue
            heads = table.locator(":scope > thead > tr > th")
            numeric = [i for i in range(heads.count()) if "num" in (heads.nth(i).get_attribute("class") or "").split()]
            if not numeric:
                problems.append(f"#{tid} has no numeric heading (th.num)")
            before = sorted(page.evaluate(_COLUMN_JS, [tid, 0]))
            for i in numeric:
                th = heads.nth(i)
                label = f"#{tid} column {i} ({th.inner_text().strip()!r})"
                # a heading's text may link to the dataset's section: click beside the link, where the
                # page's script sorts
                where = {"position": {"x": 2, "y": 2}} if th.locator("a").count() else {}
                orders = []
                for click in (1, 2):
                    th.click(**where)
                    aria = th.get_attribute("aria-sort")
                    if aria not in ("ascending", "descending"):
                        problems.append(f"{label}: aria-sort={aria!r} after click {click}")
                        break
                    why = _order_problem(page.evaluate(_COLUMN_JS, [tid, i]), aria == "ascending")
                    if why:
                        problems.append(f"{label} after click {click} ({aria}): {why}")
                        break
                    if sorted(page.evaluate(_COLUMN_JS, [tid, 0])) != before:
                        problems.append(f"{label}: rows lost or changed by sorting")
                        break
                    orders.append(aria)
                if len(orders) == 2 and orders[0] == orders[1]:
                    problems.append(f"{label}: a second click did not reverse the order ({orders})")
    finally:
        ctx.close()
    return problems + [f"page error while sorting: {e}" for e in errors]


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if v is not None and (k == "id" or (k == "name" and tag == "a")):
                self.ids.add(v)


def _links(rec: dict) -> list[str]:
    """Every local <a href>: its file exists, and its #fragment is an id of the target page."""
    index: Path = rec["index"]
    ids: dict[Path, set[str]] = {}
    broken = []
    for href in dict.fromkeys(rec["hrefs"]):
        u = urlsplit(href)
        if u.scheme or u.netloc:  # http(s), mailto, …: not local
            continue
        target = (index.parent / unquote(u.path)).resolve() if u.path else index.resolve()
        if not target.exists():
            broken.append(f"broken link <a href={href!r}>: no file {target}")
            continue
        if u.fragment and target.suffix in (".html", ".htm"):
            if target not in ids:
                p = _Ids()
                p.feed(target.read_text(encoding="utf-8", errors="replace"))
                ids[target] = p.ids
            if unquote(u.fragment) not in ids[target]:
                broken.append(f"broken link <a href={href!r}>: no id {unquote(u.fragment)!r} in {target}")
    return broken


@pytest.mark.parametrize("name", PAGES)
def test_page_in_a_browser(browser, shots, tmp_path_factory, name):
    """One test per page (so parallel workers never build a page twice); it lists every problem found."""
    index = _build(name, tmp_path_factory)
    recs = {vp: _visit(browser, index, name, vp, shots) for vp in VIEWPORTS}
    problems = (_errors(recs["desktop"]) + _errors(recs["phone"]) + _images(recs["desktop"]) + _images(recs["phone"])
                + _glance_layout(recs["desktop"]) + _banner(recs["desktop"], name) + _sorting(browser, index)
                + _links(recs["desktop"]) + _phone_width(recs["phone"]))
    assert not problems, f"{index}: {len(problems)} problem(s):\n" + "\n".join(f"- {p}" for p in problems)
