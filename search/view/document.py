"""A report written once as blocks, rendered both as Markdown and as a standalone HTML page."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Sequence


def _md_text(text: str) -> str:
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", list(header), [list(map(str, r)) for r in rows]))

    def image(self, path: str, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def markdown(self) -> str:
        """Markdown in which text taken from a study (its name, attributes) stays text: HTML in it
        is escaped, as the HTML page escapes it, and so are a table cell's pipes and line breaks."""
        e = _md_text
        out = [f"# {e(self.title)}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out += ["#" * block[1] + " " + e(block[2]), ""]
            elif kind == "p":
                out += [e(block[1]), ""]
            elif kind == "table":
                header, rows = block[1], block[2]
                out += ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows] + [""]
            elif kind == "img":
                out += [f"![{_md_cell(block[2]).replace(']', '&#93;')}]({block[1].replace(')', '%29').replace(' ', '%20')})", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
            elif kind == "p":
                body.append(f"<p>{e(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{e(h)}</th>" for h in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in block[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                body.append(f'<p><img src="{e(block[1])}" alt="{e(block[2])}"></p>')
        style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
                 "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}img{max-width:100%}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(self.title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
