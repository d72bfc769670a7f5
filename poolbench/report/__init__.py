"""Reports: tidy result rows -> ``report.md`` (tables with the best value in bold and the
reference pool marked), ``report.html`` (the same blocks as one self-contained page, sortable
and filterable), PNG plots, ``results.csv`` and ``results.json``.

    from poolbench.report import build_report
    path = build_report("results", "reports/quick")      # -> reports/quick/report.md
    path = build_report(["results-a", "results-b"], "reports/both")   # stores merged by cell hash

Modules: ``tables`` (markdown tables, best-value rules), ``plots`` (deterministic PNGs),
``sections`` (one renderer per suite), ``illustrations`` (LiftPool sub-bands and
reconstructions, computed at report time), ``meta`` (intervals, verdicts and provenance the
page shows beside each value), ``page`` (report.html from ``templates/``), ``stores`` (several
stores as one), ``publish`` (the atomic report folder), ``build`` (the entry point).
"""
from .build import build_report

__all__ = ["build_report"]
