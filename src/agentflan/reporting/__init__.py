"""Paper tables, figures and the diff against the paper, built from result summaries only.

The Snakemake rules call one function per output:

* :func:`build_table` ``(table_id, summary_dir, reported_path, out_csv, out_md)``, table1..table6
* :func:`build_figure` ``(fig_id, summary_dir, reported_path, out_png)``, fig1..fig8
* :func:`build_diff` ``(summary_dir, reported_path, tables_dir, out_md, out_csv)``; reads
  ``tables_dir/<table_id>.csv`` for all six tables.

Inputs: ``results/<run>/summary/`` (docs/CONTRACTS.md, "Result summaries") and
``paper/paper_reported.yaml``. Outputs are byte-deterministic.
"""
from .diff import build_diff
from .figures import FIGURE_IDS, build_figure
from .reported import consistency_checks, load_reported
from .tables import TABLE_IDS, build_table

__all__ = ["build_table", "build_figure", "build_diff", "load_reported", "consistency_checks",
           "TABLE_IDS", "FIGURE_IDS"]
