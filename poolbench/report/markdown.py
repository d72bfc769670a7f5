"""A small markdown document builder: headings, paragraphs, notes, tables, figures."""
from __future__ import annotations


class Document:
    def __init__(self):
        self.blocks: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(f"{'#' * level} {text}")

    def para(self, text: str) -> None:
        if text:
            self.blocks.append(text)

    def note(self, text: str) -> None:
        """An italic one-paragraph note (skips, caveats)."""
        self.blocks.append(f"_{text}_")

    def table(self, text: str, footnote: str | None = None) -> None:
        if text:
            self.blocks.append(text if not footnote else f"{text}\n\n{footnote}")

    def code(self, lines: list[str], lang: str = "") -> None:
        self.blocks.append("\n".join([f"```{lang}", *lines, "```"]))

    def figure(self, filename: str, alt: str, caption: str | None = None) -> None:
        block = f"![{alt}]({filename})"
        if caption:
            block += f"\n\n{caption}"
        self.blocks.append(block)

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append("\n".join(f"- {i}" for i in items))

    def render(self) -> str:
        return "\n\n".join(b.rstrip() for b in self.blocks if b) + "\n"


def code_span(text) -> str:
    text = str(text)
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"
