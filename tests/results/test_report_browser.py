"""The HTML report in a real headless Chromium (Debian's, driven through its WebDriver).

Skipped when Chromium or chromedriver is missing (install: ``bash .ci/browser/install.sh``);
under CI=true it fails instead, so CI cannot pass without looking at the page.
"""

from repro.results.report import build
from needs import programs
from report_helpers import write_records


def _driver():
    chromium, chromedriver = programs("chromium", "chromedriver", hint="install them: bash .ci/browser/install.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


PAGE_FACTS = """
const imgs = Array.from(document.images);
const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));
return {
  title: document.title,
  h1: document.querySelector('h1') && document.querySelector('h1').textContent,
  tables: document.querySelectorAll('table').length,
  verdictRows: document.querySelectorAll('table')[0] ? document.querySelectorAll('table')[0].rows.length : 0,
  badges: document.querySelectorAll('span.verdict').length,
  imgs: imgs.map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                        shown: i.getBoundingClientRect().width})),
  links: links,
  brokenAnchors: links.filter(h => h.startsWith('#') && !document.getElementById(h.slice(1))),
  resources: performance.getEntriesByType('resource').map(r => r.name),
  supportedColour: getComputedStyle(document.querySelector('span.v-supported')).backgroundColor,
};
"""


def test_report_loads_shows_tables_and_figures_without_broken_links(tmp_path):
    paths = build([write_records(tmp_path / "runs")], tmp_path / "out")
    driver = _driver()
    try:
        driver.get(paths["html"].resolve().as_uri())
        facts = driver.execute_script(PAGE_FACTS)
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    assert facts["title"] == "Momentum² Teacher: claims report"
    assert facts["h1"].startswith("Momentum² Teacher: the paper's claims")
    # the verdict table (a header and 22 claims), the evidence tables and the 12 paper tables
    assert facts["verdictRows"] == 23
    assert facts["tables"] > 40
    assert facts["badges"] > 22
    assert facts["supportedColour"] == "rgb(212, 237, 218)"  # the page's own styles applied
    # Figure 3 and Table 1's training curves at cpu (the only records that logged steps),
    # decoded and laid out: the curves are 6 x 3.8 in at 110 dpi, 660 x 418 px.
    assert len(facts["imgs"]) == 2
    fig3, curves = facts["imgs"]
    assert fig3["complete"] and fig3["w"] > 300 and fig3["h"] > 200 and fig3["shown"] > 100
    assert curves["complete"] and curves["w"] == 660 and curves["h"] == 418 and curves["shown"] > 100
    # links: only anchors of the page, each resolving; nothing fetched from elsewhere
    assert facts["links"] and all(h.startswith("#") for h in facts["links"])
    assert facts["brokenAnchors"] == []
    assert facts["resources"] == []
    assert [entry for entry in logs if entry["level"] == "SEVERE"] == []
