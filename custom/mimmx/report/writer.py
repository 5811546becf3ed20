"""``write_report``: the Markdown report and its figures from the metrics JSON (plus the training history and the
test features), into one folder that matches the report (stale figures of an earlier run are removed)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from mimmx.errors import DataError
from mimmx.io_utils import atomic_write_text
from mimmx.report.embeddings import embedding_figures
from mimmx.report.figures import group_figure, leakage_figure, roc_figure
from mimmx.report.files import read_history, read_json
from mimmx.report.markdown import (
    decision_leakage_section,
    embedding_section,
    factor_section,
    leakage_section,
    posthoc_section,
    summary_section,
    training_section,
)
from mimmx.report.training_figure import training_figure
from mimmx.report.values import factor_names

__all__ = ["write_report", "OWNED_FIGURES"]

# Figure names this package owns: stale copies from an earlier run are removed so the folder matches the report.
OWNED_FIGURES = ("group_auroc.png", "group_accuracy.png", "roc.png", "leakage.png", "training.png")


def write_report(
    metrics_file: str,
    output_dir: str,
    history_file: str | None = None,
    features_file: str | None = None,
    title: str = "MIMM-X evaluation report",
    seed: int = 0,
    embeddings: bool = False,
) -> str:
    """Write ``output_dir/report.md`` and its PNG figures under ``output_dir/figures``; return the report path.

    Args:
        metrics_file: the evaluation's ``metrics.json``.
        output_dir: folder of ``report.md``; figures go to its ``figures/``.
        history_file: the training's ``history.json``; adds the training section when given.
        features_file: the test features ``.npz`` the t-SNE embeddings are drawn from.
        title: the report's first heading.
        seed: seed of the t-SNE subsample and layout.
        embeddings: draw the t-SNE embeddings of ``features_file`` (about a minute per partition); off by default,
            and the report then says how to turn them on.

    Raises:
        DataError: a file is missing or unreadable, or the metrics are not an object with a ``splits`` object.
    """
    metrics = read_json(metrics_file, "metrics")
    if not isinstance(metrics, Mapping):
        raise DataError(f"{metrics_file}: metrics must be a JSON object")
    if not isinstance(metrics.get("splits") or {}, Mapping):
        raise DataError(f"{metrics_file}: 'splits' must be an object keyed by split name")
    history = read_history(history_file) if history_file else None

    out = Path(output_dir)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in [*(figures / n for n in OWNED_FIGURES), *figures.glob("embedding_*.png")]:
        stale.unlink(missing_ok=True)

    logger = logging.getLogger("mimmx")
    logger.info("report: figures and tables into %s ...", out)
    roc = roc_figure(metrics, figures / "roc.png")
    auroc_fig = group_figure(metrics, "subgroups", figures / "group_auroc.png")
    acc_fig = group_figure(metrics, "cells", figures / "group_accuracy.png")
    leak_fig = leakage_figure(metrics, figures / "leakage.png")

    lines = [f"# {title}", ""]
    meta = [
        ("spurious factors", ", ".join(map(str, factor_names(metrics)))),
        ("network partitions", ", ".join(map(str, metrics.get("partitions") or []))),
        ("target classes", ", ".join(map(str, metrics.get("target_names") or []))),
    ]
    lines += [f"- {k}: {v}" for k, v in meta if v]
    lines += [f"- metrics: `{metrics_file}`"]
    lines += [""]
    lines += summary_section(metrics, roc)
    lines += factor_section(metrics, auroc_fig, acc_fig)
    lines += decision_leakage_section(metrics)
    lines += leakage_section(metrics, leak_fig)
    lines += posthoc_section(metrics)
    if history is not None:
        lines += training_section(history, training_figure(history, figures / "training.png"))
    if features_file and embeddings:
        logger.info("report: t-SNE of every partition (about a minute per partition) ...")
        lines += embedding_section(*embedding_figures(features_file, metrics, figures, seed), seed)
    elif features_file:
        lines += embedding_section([], [], seed, drawn=False)

    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return str(path)
