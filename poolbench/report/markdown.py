"""A small document builder: headings, paragraphs, notes, tables, figures.

Every block is kept twice: as markdown text (``render``, report.md) and as an item for the web
page (``items``, report.html through ``report.page``), each item stamped with the ``scope`` it
was written in (suite, backbone, dataset and the rows behind it), which the page filters by and
takes each value's provenance from.
"""
from __future__ import annotations

from typing import Any


class Document:
    def __init__(self):
        self.blocks: list[str] = []
        self.items: list[dict[str, Any]] = []
        self.scope: dict[str, Any] = {}

    def within(self, rows=None, **scope) -> None:
        """Stamp the blocks that follow with ``scope`` (``suite=...``: a new section resets it);
        ``rows``: the result rows the blocks are computed from (their backbones and datasets
        become the scope's, their cells each value's provenance)."""
        if "suite" in scope:
            self.scope = {}
        self.scope.update(scope)
        if rows is not None:
            self.scope["rows"] = rows
            for key, column in (("backbone", "model"), ("dataset", "dataset")):
                if column in rows.columns:
                    self.scope[key] = sorted({str(v) for v in rows[column].dropna()})

    def _add(self, markdown: str, kind: str, **item) -> None:
        self.blocks.append(markdown)
        self.items.append({"kind": kind, "scope": dict(self.scope), **item})

    def heading(self, text: str, level: int = 2) -> None:
        self._add(f"{'#' * level} {text}", "heading", text=text, level=level)

    def para(self, text: str) -> None:
        if text:
            self._add(text, "para", text=text)

    def note(self, text: str) -> None:
        """An italic one-paragraph note (skips, caveats)."""
        self._add(f"_{text}_", "note", text=text)

    def table(self, text: str, footnote: str | None = None, meta: dict | None = None) -> None:
        """A markdown table; ``meta`` (``context.table_meta``) adds what only the page shows:
        intervals, verdicts, provenance, which pool each row or column is."""
        if text:
            self._add(text if not footnote else f"{text}\n\n{footnote}", "table", text=text,
                      footnote=footnote, meta=meta or {})

    def code(self, lines: list[str], lang: str = "") -> None:
        self._add("\n".join([f"```{lang}", *lines, "```"]), "code", lines=list(lines), lang=lang)

    def figure(self, filename: str, alt: str, caption: str | None = None) -> None:
        block = f"![{alt}]({filename})"
        if caption:
            block += f"\n\n{caption}"
        self._add(block, "figure", filename=filename, alt=alt, caption=caption)

    def bullets(self, items: list[str]) -> None:
        if items:
            self._add("\n".join(f"- {i}" for i in items), "bullets", items=list(items))

    def render(self) -> str:
        return "\n\n".join(b.rstrip() for b in self.blocks if b) + "\n"


def code_span(text) -> str:
    text = str(text)
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"
