"""The Markdown sections of the report: summary, per-factor results, leakage probes, post-hoc MI, training history
and feature embeddings. Each section is a list of lines; a section without data is left out, a missing value is
"n/a"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mimmx.names import CAUSAL, PAIR_SEP
from mimmx.report.values import (
    MI_UNIT,
    PROBE_TITLES,
    WORST_CELL_ACCURACY,
    WORST_SUBGROUP_AUROC,
    decision_leakage_entries,
    factor_entry,
    factor_names,
    fmt,
    fmt_ci,
    fmt_int,
    metric_value,
    ordered_splits,
    probe_axes,
    probe_kinds,
)

__all__ = [
    "summary_section",
    "factor_section",
    "decision_leakage_section",
    "leakage_section",
    "posthoc_section",
    "training_section",
    "embedding_section",
]

# metrics.json keys kept for the programs that read them, named for a person beside the key
_HEADLINE_NAMES = {"worst_group_auroc": f"{WORST_SUBGROUP_AUROC} on test_balanced"}


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _image(lines: list[str], heading: str, path: Path, caption: str) -> None:
    lines += ["", f"### {heading}", "", f"![{heading}](figures/{path.name})", "", f"*{caption}*"]


def summary_section(metrics: Mapping, roc: Path | None) -> list[str]:
    header = [
        "split",
        "n",
        "AUROC [95% CI]",
        "AUPRC [95% CI]",
        "accuracy [95% CI]",
        "balanced accuracy [95% CI]",
        "ECE",
        WORST_SUBGROUP_AUROC,
        WORST_CELL_ACCURACY,
    ]
    rows = []
    for split in ordered_splits(metrics):
        s = metrics["splits"][split] or {}
        c = s.get(CAUSAL) or {}
        causal = [fmt_ci(c.get(k)) for k in ("auroc", "auprc", "accuracy", "balanced_accuracy", "ece")]
        worst = [fmt(s.get(k)) for k in ("worst_group_auroc", "worst_group_accuracy")]
        rows.append([split, fmt_int(s.get("n", c.get("n"))), *causal, *worst])
    lines = ["## Summary", ""]
    lines += [
        "Causal head on each test split. test_id follows the training distribution; test_inverted reverses the "
        "factor-target association and test_balanced removes it, so a shortcut shows as a drop from test_id to "
        "the other two. The worst factor-subgroup AUROC is the lowest AUROC within one value of one factor (an AUROC "
        "needs both target classes); the worst target×factor cell accuracy is the lowest accuracy within one target "
        "class and one factor value; both are taken over all factors. ECE: lower is better.",
        "",
    ]
    lines += _table(header, rows) if rows else ["No split in the metrics file."]
    summary = metrics.get("summary")
    if isinstance(summary, Mapping) and summary:
        lines += ["", "Headline numbers:", ""]
        for key, v in summary.items():
            name = f"`{key}` ({_HEADLINE_NAMES[key]})" if key in _HEADLINE_NAMES else f"`{key}`"
            if isinstance(v, Mapping):
                lines += [f"- {name}: " + ", ".join(f"{k} {fmt_ci(x)}" for k, x in v.items())]
            else:
                lines += [f"- {name}: {fmt_ci(v)}"]
    if roc is not None:
        _image(
            lines,
            "ROC curves",
            roc,
            "One ROC curve of the causal head per split (AUROC [95% CI] in the legend); the dashed diagonal is "
            "chance, and a curve that drops from test_id to test_inverted means the model relied on a shortcut.",
        )
    return lines


def factor_section(metrics: Mapping, auroc_fig: Path | None, acc_fig: Path | None) -> list[str]:
    factors = factor_names(metrics)
    if not factors:
        return []
    splits = ordered_splits(metrics)
    partitions = list(metrics.get("partitions") or [])
    lines = ["", "## Per-factor results", ""]
    lines += [
        "For each spurious factor: the causal head's metrics within each subgroup and each target×factor cell, "
        "the factor's own head AUROC, and the switched AUROC (the causal head scored against the factor's label: "
        "ideal 0.5, far from 0.5 means the causal head encodes the factor). AUROC gap = best minus worst subgroup; "
        "accuracy gap = best minus worst target×factor cell."
    ]
    for f in factors:
        lines += ["", f"### Factor: {f}", ""]
        if partitions and f not in partitions:
            lines += [f"The network has no `{f}` partition, so its head AUROC is n/a.", ""]
        rows = []
        for split in splits:
            d = factor_entry(metrics, split, f)
            if d:
                rows.append(
                    [
                        split,
                        fmt(d.get("head_auroc")),
                        fmt_ci(d.get("switched_auroc")),
                        fmt(d.get("worst_group_auroc")),
                        fmt(d.get("auroc_gap")),
                        fmt(d.get("worst_group_accuracy")),
                        fmt(d.get("accuracy_gap")),
                    ]
                )
        if not rows:
            lines += [f"No split has metrics for `{f}`."]
            continue
        lines += _table(
            [
                "split",
                f"{f} head AUROC",
                "switched AUROC [95% CI] (ideal 0.5)",
                WORST_SUBGROUP_AUROC,
                "AUROC gap",
                WORST_CELL_ACCURACY,
                "accuracy gap",
            ],
            rows,
        )
        sub = [
            [split, e.get("value"), fmt_int(e.get("n")), fmt_ci(e.get("auroc")), fmt_ci(e.get("accuracy"))]
            for split in splits
            for e in factor_entry(metrics, split, f).get("subgroups") or []
            if isinstance(e, Mapping)
        ]
        if sub:
            lines += ["", f"Subgroups of {f}:", ""]
            lines += _table(["split", f, "n", "AUROC [95% CI]", "accuracy [95% CI]"], sub)
        cells = [
            [split, e.get("target"), e.get("value"), fmt_int(e.get("n")), fmt_ci(e.get("accuracy"))]
            for split in splits
            for e in factor_entry(metrics, split, f).get("cells") or []
            if isinstance(e, Mapping)
        ]
        if cells:
            lines += ["", f"Target×{f} cells:", ""]
            lines += _table(["split", "target", f, "n", "accuracy [95% CI]"], cells)
    if auroc_fig is not None:
        _image(
            lines,
            "Subgroup AUROC",
            auroc_fig,
            "Each panel is one factor; bars are the causal head's AUROC within each factor value, coloured by split, "
            "with 95% CI error bars; even bars across values and splits mean no reliance on that factor "
            "(dashed line: chance).",
        )
    if acc_fig is not None:
        _image(
            lines,
            "Cell accuracy",
            acc_fig,
            "Accuracy of the causal head in each target x factor cell (x labels: target over factor value), coloured "
            "by split with 95% CI; a shortcut shows as cells that collapse on test_inverted while their counterparts "
            "stay high.",
        )
    return lines


def decision_leakage_section(metrics: Mapping) -> list[str]:
    entries = decision_leakage_entries(metrics)
    if not entries:
        return []
    lines = ["", "## Decision leakage", ""]
    lines += [
        "How well the causal output separates each factor's values inside each target class on test_balanced "
        "(AUROC folded at 0.5, averaged over the classes; 0.5 = not at all), with its bootstrap 95% CI. The last "
        "column is what this split reads for a model that does not use the factor (the 95th percentile with the "
        "factor permuted inside each class): on a finite split even no dependence reads above 0.5. The folding "
        "puts resamples above the value near 0.5, so there read the interval's width, not its position.",
        "",
    ]
    lines += _table(
        ["factor", "decision leakage [95% CI]", "no dependence reads up to"],
        [[name, fmt_ci(entry), fmt(null)] for name, entry, null in entries],
    )
    return lines


def leakage_section(metrics: Mapping, fig: Path | None) -> list[str]:
    probes = metrics.get("probes")
    if not isinstance(probes, Mapping) or not probe_kinds(probes):
        return []
    where = ", ".join(
        x
        for x in (
            f"split {probes['split']}" if probes.get("split") else "",
            f"{probes['folds']}-fold cross-validation" if probes.get("folds") else "",
            f"n = {fmt_int(probes['n'])}" if probes.get("n") is not None else "",
        )
        if x
    )
    lines = ["", "## Leakage probes", ""]
    lines += [
        "AUROC of a probe trained on one partition's features (rows) to predict one label (columns)"
        + (f"; {where}. " if where else ". ")
        + "Reading guide: ideally the causal partition predicts the target (column `causal`) and sits at ~0.5 for "
        "every factor, and each factor partition predicts its own factor; a high value elsewhere is leakage."
    ]
    for kind in probe_kinds(probes):
        rows, cols = probe_axes(metrics, probes[kind])
        lines += ["", f"### Probe: {PROBE_TITLES.get(kind, kind)}", ""]
        lines += _table(
            ["partition \\ label", *cols],
            [[r, *(fmt((probes[kind].get(r) or {}).get(c)) for c in cols)] for r in rows],
        )
    if fig is not None:
        _image(
            lines,
            "Leakage heatmaps",
            fig,
            "Probe AUROC per partition (rows) and label (columns), colour fixed from 0.5 (no information) to 1; "
            "red boxes mark the cells that should be high, every other cell should be dark.",
        )
    return lines


def posthoc_section(metrics: Mapping) -> list[str]:
    mi = metrics.get("posthoc_mi")
    if not isinstance(mi, Mapping) or not isinstance(mi.get("pairs"), Mapping) or not mi["pairs"]:
        return []
    fit, ev = mi.get("fit_split"), mi.get("eval_split")
    lines = ["", "## Post-hoc mutual information", ""]
    lines += [
        "Mutual information between partition pairs, estimated after training by a fresh estimator"
        + (f" fit on {fit}" if fit else "")
        + (f" and evaluated on {ev}" if ev else "")
        + f", in {MI_UNIT} (natural logarithm); near 0 means the two partitions share no information.",
        "",
    ]
    pairs = [[pair.replace(PAIR_SEP, " / "), fmt(v, 4)] for pair, v in mi["pairs"].items()]
    lines += _table(["pair", f"MI ({MI_UNIT})"], pairs)
    return lines


def training_section(history: Sequence[Mapping], fig: Path | None) -> list[str]:
    lines = ["", "## Training history", ""]
    seconds = [metric_value(row.get("epoch_seconds")) for row in history]
    seconds = [s for s in seconds if s is not None]
    text = f"{len(history)} epochs"
    if seconds:
        text += f", {np.mean(seconds):.1f} s per epoch on average ({np.sum(seconds) / 60:.1f} min in all)"
    val = [(metric_value(row.get("val_auc")), row.get("epoch", i + 1)) for i, row in enumerate(history)]
    val = [(v, e) for v, e in val if v is not None]
    if val:
        best = max(val, key=lambda t: t[0])
        text += f"; best validation AUROC {best[0]:.3f} at epoch {best[1]}"
    lines += [text + "."]
    if fig is not None:
        _image(
            lines,
            "Training curves",
            fig,
            "Per-epoch curves (x: epoch): losses should fall, the MI estimate of each partition pair should shrink "
            "towards 0 as the partitions separate, and validation AUROC shows where the model peaked.",
        )
    return lines


def embedding_section(
    figs: Sequence[tuple[str, Path]], notes: Sequence[str], seed: int, drawn: bool = True
) -> list[str]:
    """The t-SNE figures with their notes; with ``drawn`` False, how to turn the embeddings on."""
    lines = ["", "## Feature embeddings", ""]
    if not drawn:
        return lines + [
            "t-SNE embeddings of the partitions were not drawn (they take about a minute per partition). To draw "
            "them, set `report_embeddings: true` in the bundle's `configs/evaluate.yaml` (or pass "
            "`--report_embeddings true` to `monai.bundle run evaluating`), or re-render this report with "
            "`mimmx report METRICS_JSON --embeddings`."
        ]
    lines += [f"2-D t-SNE of each partition's test features (seed {seed}), one panel per label."]
    lines += [f"- {note}" for note in notes]
    for partition, path in figs:
        _image(
            lines,
            f"t-SNE of the {partition} partition",
            path,
            f"Each panel colours the same {partition}-partition embedding by one label; clusters that follow a "
            "label mean the partition encodes it (wanted for its own label, unwanted for the others).",
        )
    return lines
