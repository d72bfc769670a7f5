"""Reports: tidy result rows -> ``report.md`` (tables with the best value in bold and the
reference pool marked), PNG plots and ``results.csv``.

    from poolbench.report import build_report
    path = build_report("results", "reports/quick")      # -> reports/quick/report.md

Modules: ``tables`` (markdown tables, best-value rules), ``plots`` (deterministic PNGs),
``sections`` (one renderer per suite), ``illustrations`` (LiftPool sub-bands and
reconstructions, computed at report time), ``build`` (the entry point).
"""
from .build import build_report

__all__ = ["build_report"]
