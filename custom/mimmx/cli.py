"""``mimmx`` command line: cohorts, audits, evaluation and reports around the bundles.

mimmx generate cxr --out_dir data/                       # CheXpert-format synthetic cohort
mimmx splits bundles/mimmx_cxr/data/datalist.json        # buckets and achieved rho per split
mimmx audit bundles/mimmx_cxr/data/datalist.json         # factor-target association and tiny groups per split
mimmx evaluate bundles/mimmx_cxr                         # metrics.json + report.md of the bundle's best model
mimmx report bundles/mimmx_cxr/eval/metrics.json         # re-render the report from saved outputs
mimmx methods                                            # the baselines' config overrides
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import fire

from mimmx.audit import audit_datalist, format_audit
from mimmx.data import GENERATORS, format_report, read_datalist
from mimmx.errors import ConfigError
from mimmx.methods import DESCRIPTIONS, method_arguments


class Commands:
    """Tools around the bundles; training and evaluation run through ``python -m monai.bundle``."""

    def generate(self, kind: str, out_dir: str, seed: int = 0, **kwargs: Any) -> str:
        """Write a synthetic cohort (images + table in the real cohort's format); returns the table's path."""
        if kind not in GENERATORS:
            raise ConfigError(f"generate: kind must be one of {sorted(GENERATORS)}, got {kind!r}.")
        module_name, _, attr = GENERATORS[kind].partition(":")
        generator = getattr(importlib.import_module(module_name), attr)
        return generator(out_dir=out_dir, seed=seed, **kwargs)

    def export_bundle(
        self,
        bundle_dir: str,
        out: str,
        name: str | None = None,
        weights_url: str | None = None,
        data_license: str | None = None,
        samples_per_class: int = 2,
    ) -> str:
        """Write a self-contained model-zoo bundle (folder + zip) from a trained, evaluated bundle; returns the zip:
        ``mimmx export-bundle bundles/mimmx_cxr --out dist/``. The code the configs need ships in the bundle's
        ``scripts/`` (see :func:`mimmx.zoo.export_bundle`)."""
        from mimmx.zoo import export_bundle

        return str(export_bundle(bundle_dir, out, name, weights_url, data_license, samples_per_class))

    def splits(self, datalist: str) -> None:
        """Print the split report stored in a data list written by the bundles."""
        meta = read_datalist(datalist, splits=()).get("metadata", {})
        if "split_report" not in meta:
            raise ConfigError(f"{datalist}: no split report in its metadata; was it written by prepare_datalist?")
        print(format_report(meta["split_report"]))

    def audit(self, datalist: str, min_group: int = 10) -> None:
        """Print how strongly each factor goes with the target in every split, and empty or tiny groups."""
        print(format_audit(audit_datalist(datalist, min_group=min_group)))

    def evaluate(self, bundle_root: str, **overrides: Any) -> None:
        """Run the bundle's ``evaluating`` workflow (train.yaml + evaluate.yaml); ``--id value`` overrides config ids,
        e.g. ``--model_file runs/x/model.pt --output_dir runs/x/eval --bootstrap_samples 200``."""
        from monai.bundle import run

        root = Path(bundle_root)
        configs = [root / "configs" / "train.yaml", root / "configs" / "evaluate.yaml"]
        missing = [str(c) for c in configs if not c.is_file()]
        if missing:
            raise ConfigError(f"evaluate: {bundle_root!r} is not a mimmx bundle: missing {missing}.")
        logging_file = root / "configs" / "logging.conf"
        run(
            run_id="evaluating",
            bundle_root=str(root),
            config_file=[str(c) for c in configs],
            logging_file=str(logging_file) if logging_file.is_file() else None,
            **overrides,
        )

    def report(
        self,
        metrics: str,
        out_dir: str | None = None,
        history: str | None = None,
        features: str | None = None,
        title: str = "MIMM-X evaluation report",
    ) -> str:
        """Render report.md and its figures from a metrics.json (history.json and features .npz next to it are
        picked up unless given); returns the report's path."""
        from mimmx.report import write_report

        folder = Path(metrics).parent
        history = history or _existing(folder / "history.json")
        features = features or _existing(folder / "features_test_balanced.npz")
        return write_report(metrics, out_dir or str(folder), history_file=history, features_file=features, title=title)

    def methods(self) -> None:
        """Print every benchmarked method with the overrides that select it in ``monai.bundle run training``."""
        for name, text in DESCRIPTIONS.items():
            print(f"{name:<12} {text}\n{'':<12} {' '.join(method_arguments(name)) or '(the bundle as shipped)'}")


def _existing(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def main() -> None:
    fire.Fire(Commands, name="mimmx")


if __name__ == "__main__":
    main()
