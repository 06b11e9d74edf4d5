"""The memo of ``driftgate report`` as blocks (headings, paragraphs, tables, images),
written once and rendered twice, to Markdown and to HTML, so the two say the same thing."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._residual_series import ResidualSeries

__all__ = ["Heading", "Image", "Memo", "Paragraph", "Table"]


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass
class Image:
    file: str
    alt: str


_Block = Heading | Paragraph | Table | Image


@dataclass
class Memo:
    """The memo as blocks, and the plots to write beside it (file name -> figure)."""

    title: str
    blocks: list[_Block] = field(default_factory=list)
    plots: dict[str, Figure] = field(default_factory=dict)
    series: dict[str, ResidualSeries] = field(default_factory=dict)
    """The data of the plots that show a series over time (file name -> data)."""

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            if isinstance(block, Heading):
                lines += [f"{'#' * block.level} {block.text}", ""]
            elif isinstance(block, Paragraph):
                lines += [block.text, ""]
            elif isinstance(block, Table):
                cell = _markdown_cell
                lines.append("| " + " | ".join(cell(h) for h in block.headers) + " |")
                lines.append("|" + "---|" * len(block.headers))
                lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            else:
                lines += [f"![{block.alt}]({block.file})", ""]
        return "\n".join(lines)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for block in self.blocks:
            if isinstance(block, Heading):
                body.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
            elif isinstance(block, Paragraph):
                body.append(f"<p>{e(block.text)}</p>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{e(h)}</th>" for h in block.headers)
                rows = "".join(
                    "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                    for row in block.rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            else:
                body.append(f'<p><img src="{e(block.file)}" alt="{e(block.alt)}"></p>')
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{e(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )


# A few plain rules: readable printed or on screen, no framework.
_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left}"
    "th{background:#eee}img{max-width:100%}"
)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
