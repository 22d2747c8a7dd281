"""A self-contained HTML page: figures are embedded as base64 data URIs and tables are
rendered by pandas, so ``index.html`` opens in any browser without a server or the files
next to it."""

from __future__ import annotations

import base64
import html
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from xaipipe.errors import DataError

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
div.table { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .8em 0; font-size: .8em; }
th, td { border: 1px solid #ccc; padding: .2em .4em; text-align: right; }
th { background: #f3f3f3; white-space: normal; overflow-wrap: anywhere; max-width: 8em;
     vertical-align: bottom; }
td { overflow-wrap: anywhere; max-width: 28em; }
p.warning { background: #fde8e8; border-left: 4px solid #c33; padding: .5em .8em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; }
.note { color: #555; font-size: .9em; } .missing { color: #a33; }
ul.findings li { margin: .3em 0; } section { overflow-x: auto; }
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Section:
    title: str
    intro: str = ""
    blocks: list[str] = field(default_factory=list)

    def table(self, frame: pd.DataFrame, caption: str = "", float_format: str = "{:.3f}",
              source: str = "") -> None:
        """``frame`` as an HTML table; ``source``: the CSV beside ``index.html`` it comes from
        (linked under the table, so every number can be traced to its file)."""
        body = frame.to_html(index=False, na_rep="–", float_format=float_format.format, border=0)
        cap = f"<p class='note'>{html.escape(caption)}</p>" if caption else ""
        link = (f"<p class='note'>Source: <a href='{html.escape(source)}'>"
                f"{html.escape(source)}</a></p>" if source else "")
        self.blocks.append(f"{cap}<div class='table'>{body}</div>{link}")

    def figure(self, path: str | Path, caption: str = "") -> None:
        self.blocks.append(
            f"<figure><img src='{data_uri(path)}' alt='{html.escape(caption or Path(path).name)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def text(self, paragraph: str) -> None:
        self.blocks.append(f"<p>{html.escape(paragraph)}</p>")

    def warning(self, paragraph: str) -> None:
        self.blocks.append(f"<p class='warning'>{html.escape(paragraph)}</p>")

    def bullets(self, items: list[str]) -> None:
        lis = "".join(f"<li>{html.escape(item)}</li>" for item in items)
        self.blocks.append(f"<ul class='findings'>{lis}</ul>")

    def missing(self, what: str) -> None:
        self.blocks.append(f"<p class='missing'>Not available: {html.escape(what)}</p>")

    def render(self) -> str:
        anchor = _anchor(self.title)
        intro = f"<p class='note'>{html.escape(self.intro)}</p>" if self.intro else ""
        return f"<section id='{anchor}'><h2>{html.escape(self.title)}</h2>{intro}{''.join(self.blocks)}</section>"


def data_uri(path: str | Path) -> str:
    """The file as a ``data:`` URI; a missing figure is an error, never a broken image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"report figure {path} does not exist; rerun the stage that draws it")
    data = path.read_bytes()
    if path.suffix.lower() == ".png" and not data.startswith(PNG_SIGNATURE):
        raise DataError(f"report figure {path} is not a PNG file; rerun the stage that draws it")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def render_page(title: str, sections: list[Section], footer: str = "") -> str:
    toc = "".join(f"<li><a href='#{_anchor(s.title)}'>{html.escape(s.title)}</a></li>" for s in sections)
    body = "".join(s.render() for s in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><nav><ol>{toc}</ol></nav>{body}"
        f"<footer class='note'>{html.escape(footer)}</footer></body></html>\n"
    )


def _anchor(title: str) -> str:
    return "".join(ch.lower() if ch.isalnum() else "-" for ch in title).strip("-")
