"""Screenshots of a report's sections for the documentation (docs/img/report-<section>.png).

    python tools/report_screenshots.py runs/quickstart/report.html docs/img [SECTION ...]
    python tools/report_screenshots.py --prefix NAME PAGE.html docs/img SECTION ...

Saves docs/img/<prefix>-<section>.png (prefix "report" by default) for each section id.

Needs Debian's Chromium (/usr/bin/chromium) and playwright (the `test` extra). Opens the report
offline, waits until every plotly figure has drawn, and saves one PNG per <section>.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(report: Path, out_dir: Path, sections: list[str], prefix: str = "report") -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: no chromium on PATH (apt-get install chromium)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_context(offline=True, viewport={"width": 1200, "height": 900}).new_page()
        page.goto(report.resolve().as_uri(), wait_until="load")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot')]"
            ".every(e => e.querySelector('.main-svg'))"
        )
        for section in sections:
            target = out_dir / f"{prefix}-{section}.png"
            page.locator(f"section#{section}").screenshot(path=str(target))
            print(target)
        browser.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    prefix = "report"
    if args[:1] == ["--prefix"] and len(args) > 1:
        prefix, args = args[1], args[2:]
    if len(args) < 2:
        sys.exit(__doc__)
    chosen = args[2:] or ["verdicts", "dynamics", "layers"]
    main(Path(args[0]), Path(args[1]), chosen, prefix)
