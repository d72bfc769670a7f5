"""``report.html``: the report's blocks as one self-contained web page.

The page is rendered with Jinja2 from the template shipped in ``report/templates/`` (CSS and
JavaScript inlined, figures embedded as base64 PNGs, links only to files of the report's own
folder), so it opens from disk with no network. It holds the same blocks as ``report.md`` in
the same order, as plain HTML tables readable without JavaScript; the script adds sorting by
any column and filters by suite, dataset, backbone and pool (also from the URL fragment,
e.g. ``report.html#pool=lift&dataset=shapes``). Inline markdown (code spans, bold) is rendered
with markdown-it-py, which escapes everything else.
"""
from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import jinja2
from markdown_it import MarkdownIt

from .markdown import Document
from .meta import pool_key

# raw HTML escaped, no links or images: text from rows (pool specs, error messages) can neither
# inject markup nor point the page outside its folder
_MD = MarkdownIt("commonmark", {"html": False}).disable(["link", "image", "autolink"])
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("poolbench.report", "templates"),
                          autoescape=True, trim_blocks=True, lstrip_blocks=True,
                          undefined=jinja2.StrictUndefined)
VERDICT_NOTE = ("Δ = pool - reference with its 95% interval: over the per-seed differences where "
                "pool and reference share 2 or more training seeds (training and evaluation noise), "
                "else over test images only (evaluation noise); resolved when it excludes 0")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def inline(text: str) -> str:
    """Inline markdown as HTML (escaped)."""
    return _MD.renderInline(str(text))


def write_page(doc: Document, folder: Path, *, title: str, links: dict[str, str]) -> Path:
    """Render ``doc`` into ``folder/report.html``; ``links``: {label: file in ``folder``}."""
    views = [_view(item, folder) for item in doc.items]
    seen: dict[str, int] = {}
    for view in views:      # "convnet on shapes" heads a group in every suite: unique anchors
        if view["kind"] == "heading":
            n = seen[view["id"]] = seen.get(view["id"], 0) + 1
            view["id"] += f"-{n}" if n > 1 else ""
    sections = _sections(views)
    filters = _filters(doc.items)
    html = _ENV.get_template("report.html").render(
        title=title, sections=sections, filters=filters, links=links,
        css=_ENV.loader.get_source(_ENV, "report.css")[0],
        js=_ENV.loader.get_source(_ENV, "report.js")[0])
    path = folder / "report.html"
    path.write_text(html)
    return path


# --- blocks -----------------------------------------------------------------------------------

def _view(item: dict, folder: Path) -> dict:
    kind, scope = item["kind"], item["scope"]
    view = {"kind": kind, "suite": scope.get("suite", ""),
            "datasets": " ".join(scope.get("dataset", [])),
            "backbones": " ".join(scope.get("backbone", []))}
    if kind == "heading":
        view.update(level=item["level"], html=inline(item["text"]), id=_slug(item["text"]))
    elif kind in ("para", "note"):
        view.update(html=inline(item["text"]))
    elif kind == "table":
        view.update(_table(item["text"], item["meta"]),
                    footnote=inline(item["footnote"]) if item["footnote"] else "")
    elif kind == "code":
        view.update(lines=item["lines"])
    elif kind == "figure":
        data = base64.b64encode((folder / item["filename"]).read_bytes()).decode("ascii")
        view.update(src=f"data:image/png;base64,{data}", alt=item["alt"], file=item["filename"],
                    caption=inline(item["caption"]) if item["caption"] else "")
    elif kind == "bullets":
        view.update(items=[inline(i) for i in item["items"]])
    return view


def _sections(views: list[dict]) -> list[dict]:
    """[{heading, suite, groups: [{heading, datasets, backbones, blocks}]}]: level-2 headings
    open a section, level-3 headings a group; a group's scope is that of its blocks."""
    sections = [{"heading": None, "suite": "", "groups": []}]
    for view in views:
        if view["kind"] == "heading" and view["level"] <= 2:
            sections.append({"heading": view, "suite": "", "groups": []})
            continue
        section = sections[-1]
        if view["kind"] == "heading" or not section["groups"]:
            section["groups"].append({"heading": view if view["kind"] == "heading" else None,
                                      "datasets": set(), "backbones": set(), "blocks": []})
            if view["kind"] == "heading":
                continue
        group = section["groups"][-1]
        group["blocks"].append(view)
        group["datasets"] |= set(view["datasets"].split())
        group["backbones"] |= set(view["backbones"].split())
        section["suite"] = section["suite"] or view["suite"]
    for section in sections:
        for group in section["groups"]:
            group["datasets"] = " ".join(sorted(group["datasets"]))
            group["backbones"] = " ".join(sorted(group["backbones"]))
    return [s for s in sections if s["heading"] or s["groups"]]


def _filters(items: list[dict]) -> dict[str, list[str]]:
    """The values each filter offers: every suite, dataset, backbone and pool of the tables."""
    found: dict[str, set] = {"suite": set(), "dataset": set(), "backbone": set(), "pool": set()}
    for item in items:
        if item["kind"] != "table":
            continue
        scope = item["scope"]
        if scope.get("suite"):
            found["suite"].add(scope["suite"])
        found["dataset"] |= set(scope.get("dataset", []))
        found["backbone"] |= set(scope.get("backbone", []))
        if item["meta"].get("pools_in"):
            found["pool"] |= set(item["meta"].get("provenance", {}))
    return {k: sorted(v) for k, v in found.items()}


# --- tables -----------------------------------------------------------------------------------

def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, rows, alignments) of a GitHub markdown table as ``tables.to_markdown`` and
    tabulate write it (no escaped pipes: cells never contain one)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split("|")]

    headers, rule, body = cells(lines[0]), cells(lines[1]), [cells(line) for line in lines[2:]]
    align = ["right" if r.endswith(":") and not r.startswith(":") else "left" for r in rule]
    return headers, body, align


def _table(text: str, meta: dict) -> dict:
    headers, body, align = parse_markdown_table(text)
    pools_in = meta.get("pools_in")
    spans = meta.get("intervals", {})
    prov = meta.get("provenance", {})
    verdicts = meta.get("verdicts", {})
    columns = [{"html": inline(h), "align": a, "title": "",
                "pool": pool_key(h) if pools_in == "columns" and i else ""}
               for i, (h, a) in enumerate(zip(headers, align))]
    scales = {h: _scale(s) for h, s in spans.items()}
    rows = []
    for cells in body:
        key = pool_key(_plain(cells[0])) if pools_in == "rows" else ""
        row = {"pool": key, "cells": [], "provenance": _prov_lines(prov.get(key))}
        for i, text_ in enumerate(cells):
            header = headers[i] if i < len(headers) else ""
            column_pool = columns[i]["pool"] if i < len(columns) else ""
            pool = key or column_pool            # the pool this value belongs to
            span = spans.get(header, {}).get(key) if key else None
            row["cells"].append({
                "html": inline(text_), "sort": _sort_key(text_), "align": align[i] if i < len(align) else "left",
                "pool": column_pool,
                "title": "" if i == 0 and pools_in == "rows" else _prov_title(prov.get(pool)),
                "interval": _interval(span, scales.get(header))})
        if verdicts:
            verdict = verdicts.get(key, "")
            row["cells"].append({"html": inline(verdict), "sort": verdict, "align": "left", "pool": "",
                                 "title": "", "interval": None})
        rows.append(row)
    if verdicts:
        columns.append({"html": inline(f"verdict vs `{meta.get('reference')}`"), "align": "left",
                        "pool": "", "title": VERDICT_NOTE})
    return {"columns": columns, "rows": rows, "pools_in": pools_in or ""}


def _plain(text: str) -> str:
    return text.replace("**", "").strip()


def _sort_key(text: str) -> str:
    """The number a cell starts with (as the script compares it), else its plain text."""
    plain = _plain(text)
    match = _NUMBER.match(plain)
    return match.group(0) if match else plain


def _scale(spans: dict) -> tuple[float, float] | None:
    ends = [v for s in spans.values() for v in s.values() if v is not None and math.isfinite(v)]
    if len(ends) < 2 or max(ends) == min(ends):
        return None
    return min(ends), max(ends)


def _interval(span: dict | None, scale: tuple[float, float] | None) -> dict | None:
    """The interval texts and bar positions (% of the column's range) of one value."""
    if not span:
        return None
    out = {"text": "", "bars": []}
    for lo, hi, label, kind in ((span["lo"], span["hi"], "", "eval"),
                                (span["slo"], span["shi"], "seeds ", "seeds")):
        if lo is None or hi is None:
            continue
        out["text"] += f" {label}[{lo:.2f}, {hi:.2f}]"
        if scale:
            a, b = scale
            left = 100.0 * (lo - a) / (b - a)
            out["bars"].append({"kind": kind, "left": f"{left:.1f}",
                                "width": f"{max(100.0 * (hi - lo) / (b - a), 0.8):.1f}"})
    out["text"] = out["text"].strip()
    out["title"] = ("95% interval over test images" + ("; thin: over training seeds" if span["slo"] is not None else "")
                    if span["lo"] is not None else "95% interval over training seeds")
    return out if out["text"] else None


def _prov_lines(info: dict | None) -> list[str]:
    if not info:
        return []
    lines = [f"cell {h}" for h in info.get("cells", [])]
    return lines + [f"{k}: {v}" for k, v in info.items() if k != "cells"]


def _prov_title(info: dict | None) -> str:
    if not info:
        return ""
    short = [f"cells: {', '.join(h[:12] for h in info.get('cells', []))}"]
    return "\n".join(short + [f"{k}: {v}" for k, v in info.items() if k != "cells"])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "section"
