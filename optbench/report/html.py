"""report.html: report.md as one file to send, its figures embedded and its tables sortable.

Rendered from report.md's own text, so the two never disagree; the page loads nothing else.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import unquote

from markdown_it import MarkdownIt

# Raw HTML in the Markdown (a run name, a config value) is shown as text, never interpreted.
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
# A table wider than the page scrolls in its own box instead of widening the page.
MARKDOWN.add_render_rule("table_open", lambda *_: '<div class="scroll"><table>\n')
MARKDOWN.add_render_rule("table_close", lambda *_: "</table></div>\n")

STYLE = """\
body { font: 15px/1.5 system-ui, sans-serif; color: #222; max-width: 1600px; margin: 0 auto;
       padding: 1rem 1.5rem 3rem; }
p, ul { max-width: 62rem; }
h1 { margin-bottom: 0.2rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.written { color: #555; margin-top: 0; }
code { font-size: 0.9em; background: #f3f3f3; padding: 0 0.2em; overflow-wrap: anywhere; }
img { display: block; max-width: 100%; height: auto; margin: 0.8rem 0; }
.scroll { overflow-x: auto; margin: 0.8rem 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 0.25rem 0.5rem; border-bottom: 1px solid #e3e3e3; vertical-align: top; }
td[style*="right"] { white-space: nowrap; font-variant-numeric: tabular-nums; }
thead th { background: #f3f3f3; cursor: pointer; user-select: none; }
thead th:hover { background: #e6e6e6; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
"""

# Click a header to sort by its column, again to reverse. A cell that starts with a number
# (97.1±0.4, [96.0, 98.2], 1.25x, 0.003 *) sorts as that number, before any other cell
# (1 seed, 2 missed, -). `?sort=T.C,...` clicks column C of table T (from 0) on load.
SCRIPT = """\
(function () {
  function number(cell) {
    var m = /^[\\[>]?\\s*([+-]?(?:\\d+\\.?\\d*|\\.\\d+)(?:e[+-]?\\d+)?)(.*)$/i.exec(cell.textContent.trim());
    return m && !/^\\s*[a-z]{3}/i.test(m[2]) ? parseFloat(m[1]) : null;
  }
  function compare(a, b, sign) {
    var x = number(a), y = number(b);
    if (x !== null && y !== null) return sign * (x - y);
    if (x !== null || y !== null) return x === null ? 1 : -1;
    return sign * a.textContent.trim().localeCompare(b.textContent.trim(), undefined, {numeric: true});
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0], column = th.cellIndex;
    var sign = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", sign === 1 ? "ascending" : "descending");
    Array.from(body.rows)
      .sort(function (r, s) { return compare(r.cells[column], s.cells[column], sign); })
      .forEach(function (row) { body.appendChild(row); });
  }
  var tables = document.querySelectorAll("table");
  tables.forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th) {
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(th); });
    });
  });
  var wanted = new URLSearchParams(location.search).get("sort");
  (wanted ? wanted.split(",") : []).forEach(function (spec) {
    var at = spec.split("."), table = tables[+at[0]];
    var th = table && table.tHead && table.tHead.rows[0].cells[+at[1]];
    if (th) th.click();
  });
})();
"""


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def report_html(markdown: str, folder: Path, title: str, when: str, command: str) -> str:
    """The page for `markdown` (report.md, its figures relative to `folder`), saying under its
    first heading when and by which command it was written."""
    tokens = MARKDOWN.parse(markdown)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                child.attrSet("src", png_data_uri(folder / unquote(str(child.attrGet("src")))))
    heading = next(i for i, t in enumerate(tokens) if t.type == "heading_close") + 1
    render = MARKDOWN.renderer.render
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n"
        + render(tokens[:heading], MARKDOWN.options, {})
        + f'<p class="written">Written {html.escape(when)} by <code>{html.escape(command)}</code>; '
        "report.csv and runs.csv beside it hold every column.</p>\n"
        + render(tokens[heading:], MARKDOWN.options, {})
        + f"<script>\n{SCRIPT}</script>\n</body>\n</html>\n"
    )
