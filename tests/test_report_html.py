"""report.html: every table of report.md, every figure embedded, nothing loaded from elsewhere,
sortable in a real browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from test_report import FAST, optbench

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A folder name the page must show as text, not read as markup.
ODD_FOLDER = "sweep <i>one & two"


class Page(HTMLParser):
    """The tables (rows of cell texts), the attributes that load something, and every tag."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []
        self.sorted_headers: list[tuple[str, str]] = []  # (header, aria-sort)
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        self.references += [(tag, k, v) for k, v in attrs if k in ("src", "href") and v]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            if "aria-sort" in attributes:
                self.sorted_headers.append((str(len(self.tables[-1][-1])), attributes["aria-sort"]))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def markdown_tables(markdown: str) -> list[list[list[str]]]:
    """Each pipe table of report.md as rows of cells, the alignment row left out."""
    tables, rows = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            rows.append([c.strip().replace("\\|", "|") for c in cells])
        elif rows:
            tables.append([rows[0], *rows[2:]])
            rows = []
    return tables


def leading_number(cell: str) -> float:
    return float(re.match(r"[+-]?[\d.]+(e[+-]?\d+)?", cell).group())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """SGD at 3 LRs (a sensitivity table, a baseline table, scores), 2 epochs, in a folder whose
    name holds markup; its report folder."""
    root = tmp_path_factory.mktemp("html")
    out = optbench(
        "train", "-m", *FAST, "model.hidden=[16]", "trainer.epochs=2", "optimizer=sgd",
        "optimizer.lr=0.00001,0.01,0.1", f"hydra.sweep.dir={root / 'sweep'}",
        cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    sweep = (root / "sweep").rename(root / ODD_FOLDER)
    out = optbench("report", str(sweep), cwd=root)
    assert out.returncode == 0, out.stderr
    assert "report.html" in out.stdout.split("wrote ")[-1]
    return sweep / "report"


def test_report_html_holds_every_table_and_figure_and_loads_nothing(report):
    markdown = (report / "report.md").read_text()
    page = Page((report / "report.html").read_text())

    expected = markdown_tables(markdown)
    assert len(expected) >= 4  # the groups, against the baseline, scores, sensitivity
    assert page.tables == expected

    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    images = [v for tag, k, v in page.references if tag == "img"]
    assert len(images) == len(figures) >= 5
    for src, figure in zip(images, figures, strict=True):
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        png = base64.b64decode(data, validate=True)
        assert png.startswith(PNG_SIGNATURE) and png == (report / figure).read_bytes()
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) > 100

    assert all(v.startswith("data:") for _, _, v in page.references), page.references
    assert not {"link", "iframe", "object", "embed"} & set(page.tags)
    text = "".join(page.text)
    assert ODD_FOLDER in text and "i" not in page.tags  # markup in a folder name stays text
    assert "Written " in text and f"optbench report '{report.parent}'" in text


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to run the page's script")
def test_report_html_sorts_a_column_by_its_numbers_in_chromium(report, tmp_path):
    (groups, *others) = markdown_tables((report / "report.md").read_text())
    header, *rows = groups
    # Column 0 is the LR: 1e-05 < 0.01 < 0.1 as numbers, last as text.
    ascending = sorted(rows, key=lambda row: leading_number(row[0]))
    assert [row[0] for row in ascending] == ["1e-05", "0.01", "0.1"]
    clicks, order = ("0.0", ascending) if rows != ascending else ("0.0,0.0", ascending[::-1])

    url = (report / "report.html").as_uri() + f"?sort={clicks}"
    browser = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert browser.returncode == 0, browser.stderr
    console = [line for line in browser.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]  # fmt: skip
    assert console == []
    page = Page(browser.stdout)
    assert page.tables == [[header, *order], *others]
    assert page.sorted_headers == [("0", "ascending" if order == ascending else "descending")]
