"""report.html: a title, facts, a metrics table and the pictures, in one self-contained page.

The pictures are PNG files beside the page, referenced by relative name, so the directory can be
copied, attached to a pull request or served as it is. Every text is escaped: metric names and
descriptions come from files anyone can register.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1340px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f4f4; }
td.better { color: #1a7f37; } td.worse { color: #cf222e; font-weight: bold; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { color: #666; } dd { margin: 0; }
.pictures { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; width: 640px; }
figcaption { font-size: 0.9em; color: #444; }
.note { color: #9a6700; }
"""


@dataclass(frozen=True)
class Cell:
    text: str
    css: str = ""  # "better" / "worse" colour a difference


@dataclass(frozen=True)
class Picture:
    file: str  # a PNG beside report.html
    title: str
    caption: str  # what a reviewer looks for in it


@dataclass
class Page:
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        out = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(self.title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{escape(self.title)}</h1>",
        ]
        if self.facts:
            out.append("<dl>")
            out += [f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in self.facts]
            out.append("</dl>")
        out += [f'<p class="note">{escape(n)}</p>' for n in self.notes]
        if self.header:
            out.append("<h2>Metrics</h2><table><thead><tr>")
            out += [f"<th>{escape(h)}</th>" for h in self.header]
            out.append("</tr></thead><tbody>")
            for row in self.rows:
                cells = "".join(
                    f'<td class="{c.css}">{escape(c.text)}</td>'
                    if c.css
                    else f"<td>{escape(c.text)}</td>"
                    for c in row
                )
                out.append(f"<tr>{cells}</tr>")
            out.append("</tbody></table>")
        if self.pictures:
            out.append('<h2>Pictures</h2><div class="pictures">')
            for p in self.pictures:
                out.append(
                    f'<figure><img src="{escape(p.file)}" alt="{escape(p.title)}" '
                    f'width="640" height="480"><figcaption><b>{escape(p.title)}.</b> '
                    f"{escape(p.caption)}</figcaption></figure>"
                )
            out.append("</div>")
        out.append("</body></html>\n")
        return "\n".join(out)

    def write(self, directory: Path) -> Path:
        path = directory / "report.html"
        path.write_text(self.render(), encoding="utf-8")
        return path
