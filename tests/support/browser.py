"""Opening a report in headless Chromium, as a reader's browser shows it and prints it.

Chromium is Debian's (`/usr/bin/chromium`, else `chromium`, `chromium-browser` or
`google-chrome` on PATH), installed for the test session on a root CI machine that lacks it (see
debian_packages). Playwright drives it through the DevTools protocol; it never downloads a
browser of its own. Chromium runs without its sandbox (tests run as root), without a GPU and
with every background connection off, in a fresh empty profile: a closed network would
otherwise refuse those connections and Chromium would log them as errors of the page.
"""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Page, Request, sync_playwright

from support.debian_packages import provided

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
PATH_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
TIMEOUT_MS = 30_000
# Each figure's outermost <svg> and each table: what the reader sees, measured in CSS pixels.
MEASURE = """() => ({
  figures: [...document.querySelectorAll("svg")].filter(s => !s.parentElement.closest("svg"))
    .map(s => { const r = s.getBoundingClientRect(); return [r.width, r.height]; }),
  tables: [...document.querySelectorAll("table")].map(t => {
    const r = t.getBoundingClientRect();
    const headings = [...document.querySelectorAll("h2")].filter(
      h => h.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING);
    return {cls: t.className, heading: headings.length ? headings.at(-1).textContent.trim() : "",
            headers: [...t.querySelectorAll("th")].map(h => h.textContent.trim()),
            rows: t.tBodies.length ? t.tBodies[0].rows.length : 0, size: [r.width, r.height],
            box: (b => [b.left, b.right])(t.parentElement.getBoundingClientRect()),
            scroll: t.parentElement.scrollWidth};
  }),
  pageWidth: document.documentElement.scrollWidth,
})"""


@dataclass(frozen=True)
class ShownTable:
    """One table as laid out: its class, the section heading above it, its header cells."""

    cls: str
    heading: str
    headers: list[str]
    rows: int
    size: tuple[float, float]
    box: tuple[float, float]  # left and right of the box the table lies in (its scroll box)
    scroll: float  # how wide that box's content is: what scrolling it reaches


@dataclass(frozen=True)
class ShownPage:
    """What Chromium made of a page: its errors, what it fetched, its figures and tables as laid
    out on screen, and the PDF it prints."""

    errors: list[str]
    fetched: list[str]
    figures: list[tuple[float, float]]
    tables: list[ShownTable]
    pdf: bytes
    page_width: float  # the document's scroll width: wider than the window where cut off


def find_chromium() -> Path | None:
    """Debian's Chromium, else the first Chromium or Chrome on PATH."""
    if DEBIAN_CHROMIUM.is_file():
        return DEBIAN_CHROMIUM
    found = next(filter(None, map(shutil.which, PATH_NAMES)), None)
    return Path(found) if found else None


@contextmanager
def chromium_executable() -> Iterator[Path]:
    """The Chromium executable, installed for the block where a root CI machine lacks one."""
    missing = (f"Chromium not found at {DEBIAN_CHROMIUM} nor as {', '.join(PATH_NAMES)} on "
               "PATH")
    with provided("chromium", find_chromium, missing) as executable:
        yield executable


class _Watch:
    """What a page does while it loads: its errors and the requests it makes for other URLs."""

    def __init__(self, page: Page, url: str) -> None:
        self.url = url
        self.errors: list[str] = []
        self.fetched: list[str] = []
        page.on("console", self.console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught exception: {error}"))
        page.on("requestfailed", self.failed)
        page.on("request", self.request)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location
            self.errors.append(f"console error at {where['url']}:{where['lineNumber']}: "
                               f"{message.text}")

    def failed(self, request: Request) -> None:
        self.errors.append(f"request failed: {request.url} ({request.failure})")

    def request(self, request: Request) -> None:
        if request.url != self.url:
            self.fetched.append(request.url)


def show(executable: Path, html_path: Path, width: int | None = None) -> ShownPage:
    """Open `html_path` in a fresh headless Chromium (a window `width` CSS pixels wide where
    given: a phone's 420), measure it and print it to PDF.

    Errors are console errors, uncaught exceptions and failed requests; `fetched` is every
    request besides the page itself, since a self-contained report fetches nothing."""
    url = html_path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=list(FLAGS),
            timeout=TIMEOUT_MS)
        try:
            page = browser.pages[0]  # a persistent context opens with one
            page.set_default_timeout(TIMEOUT_MS)
            if width is not None:
                page.set_viewport_size({"width": width, "height": 900})
            watch = _Watch(page, url)
            page.goto(url, wait_until="load")
            shown = page.evaluate(MEASURE)
            pdf = page.pdf(prefer_css_page_size=True, print_background=True)
        finally:
            browser.close()
    tables = [ShownTable(t["cls"], t["heading"], t["headers"], t["rows"], tuple(t["size"]),
                         tuple(t["box"]), t["scroll"]) for t in shown["tables"]]
    return ShownPage(watch.errors, watch.fetched, [tuple(f) for f in shown["figures"]], tables,
                     pdf, shown["pageWidth"])


class _Outline(HTMLParser):
    """How many tables and outermost <svg> figures an HTML source holds."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = self.figures = self._svg_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables += 1
        elif tag == "svg":
            self.figures += self._svg_depth == 0
            self._svg_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg" and self._svg_depth > 0:
            self._svg_depth -= 1


def outline(html: str) -> tuple[int, int]:
    """The numbers of tables and of figures (outermost <svg>) in an HTML source."""
    parser = _Outline()
    parser.feed(html)
    parser.close()
    return parser.tables, parser.figures


def problems(page: ShownPage, html: str) -> list[str]:
    """Everything wrong with how Chromium showed `html`: errors, fetches, figures or tables
    missing or laid out with no area. Empty for a report a reader sees whole."""
    found = [*page.errors, *(f"the page fetched {url}; a report fetches nothing"
                             for url in page.fetched)]
    n_tables, n_figures = outline(html)
    if len(page.figures) != n_figures:
        found.append(f"{len(page.figures)} figures shown, the HTML has {n_figures}")
    found += [f"figure {i} rendered {w:g}x{h:g} px" for i, (w, h) in enumerate(page.figures, 1)
              if not (w > 0 and h > 0)]
    if len(page.tables) != n_tables:
        found.append(f"{len(page.tables)} tables shown, the HTML has {n_tables}")
    found += [f"table {i} ({t.cls or 'no class'}, under {t.heading!r}) rendered "
              f"{t.size[0]:g}x{t.size[1]:g} px" for i, t in enumerate(page.tables, 1)
              if not (t.size[0] > 0 and t.size[1] > 0)]
    return found
