"""A Markdown evaluation report with figures, from the metrics JSON (plus the training history and test features).

A reviewer judges shortcut removal from several views at once: per-split AUROC, per-subgroup and per-cell
metrics, the switched AUROC, how much each partition leaks, and how training went. Tables alone hide the
pattern; figures alone hide the numbers, so the report has both. Every value may be missing (``null``): the
tables print "n/a" and the figures leave it out.

    write_report("eval/metrics.json", "eval/report", history_file="train/history.json",
                 features_file="eval/features.npz", embeddings=True)

One module per concern: :mod:`~mimmx.report.values` (metric entries and their formatting),
:mod:`~mimmx.report.files` (reading the inputs), :mod:`~mimmx.report.figures`,
:mod:`~mimmx.report.training_figure` and :mod:`~mimmx.report.embeddings` (the PNGs),
:mod:`~mimmx.report.markdown` (the sections), :mod:`~mimmx.report.console` (the plain-text summary) and
:mod:`~mimmx.report.writer` (the report itself).
"""

from mimmx.report.console import format_summary
from mimmx.report.values import SPLIT_ORDER
from mimmx.report.writer import write_report

__all__ = ["write_report", "format_summary", "SPLIT_ORDER"]
