"""Reports of one run: report.json (every number), report.md and a self-contained report.html.

`build_report(run_dir)` reads the run's manifest and tidy table (load.py), computes every
section with `biasbench.analysis` (analyze.py, probes.py, qc.py, power.py), words the
conclusions (words.py), draws the figures (figures.py) and renders markdown and HTML from
one list of blocks (document.py, render.py). `biasbench report RUN_DIR` is cli.py.

Names load on first use (PEP 562), so the CLI does not import pandas to print its help.
"""

from importlib import import_module

_EXPORTS = {"REPORT_SCHEMA": "analyze", "Settings": "analyze", "analyze_run": "analyze", "build_report": "build",
            "Run": "load", "load_run": "load"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
