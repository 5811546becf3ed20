"""``mimmx`` command line: cohorts, audits, evaluation and reports around the bundles.

mimmx train bundles/mimmx_cxr --max_epochs 5             # train (the errors of this tool: one line each)
mimmx generate cxr --out_dir data/                       # CheXpert-format synthetic cohort
mimmx splits bundles/mimmx_cxr/data/datalist.json        # buckets and achieved rho per split
mimmx audit bundles/mimmx_cxr/data/datalist.json         # factor-target association and tiny groups per split
mimmx evaluate bundles/mimmx_cxr                         # metrics.json + report.md of the bundle's best model
mimmx report bundles/mimmx_cxr/eval/metrics.json         # re-render the report from saved outputs
mimmx predict bundles/mimmx_cxr /data/a.dcm /data/b.png # predictions.csv + errors.csv of the bundle's model
mimmx export bundles/mimmx_cxr                           # models/model.ts, weights loaded strictly
mimmx methods                                            # the baselines' config overrides

An error about input prints one line naming the file, row or config id and what was expected (exit status 1);
``--debug`` anywhere on the line shows the full traceback instead.
"""

from __future__ import annotations

import inspect
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import fire

from mimmx.audit import audit_datalist, format_audit
from mimmx.config import as_bool, coerce_cli_value
from mimmx.data import format_report, read_datalist
from mimmx.data.prepare import synthetic_generator
from mimmx.errors import ConfigError, MimmxError
from mimmx.methods import DESCRIPTIONS, METHODS, method_arguments


class Commands:
    """Tools around the bundles; training and evaluation run through ``python -m monai.bundle``."""

    def generate(self, kind: str, out_dir: str, seed: int = 0, **kwargs: Any) -> str:
        """Write a synthetic cohort (images + table in the real cohort's format); returns the table's path."""
        generator = synthetic_generator(kind, "mimmx generate KIND")
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
        _run_bundle(bundle_root, "evaluating", ["train.yaml", "evaluate.yaml"], overrides)

    def train(self, bundle_root: str, **overrides: Any) -> None:
        """Run the bundle's ``training`` workflow (train.yaml); ``--id value`` overrides config ids, e.g.
        ``--train#resume_from latest`` after a crash."""
        _run_bundle(bundle_root, "training", ["train.yaml"], overrides)

    def predict(self, bundle_root: str, *inputs: str, **overrides: Any) -> None:
        """Score image files (or DICOM series folders, or one quoted glob pattern) with the bundle's model; writes
        ``eval/predictions.csv`` and, for every input left out with its reason, ``eval/errors.csv``."""
        if not inputs:
            raise ConfigError("predict: give the bundle folder, then one or more image files or a quoted glob.")
        source: Any = inputs[0] if len(inputs) == 1 and any(c in inputs[0] for c in "*?[") else list(inputs)
        _run_bundle(bundle_root, "run", ["inference.yaml"], {"input_glob": source, **overrides})

    def export(self, bundle_root: str, **overrides: Any) -> str:
        """TorchScript export of ``models/model.pt`` (``--filepath``, ``--ckpt_file`` to change the files); fails by
        name when the weights do not fit the network ``inference.yaml`` builds."""
        from mimmx.export import export_torchscript

        return export_torchscript(bundle_root, **{k: coerce_cli_value(v) for k, v in overrides.items()})

    def report(
        self,
        metrics: str,
        out_dir: str | None = None,
        history: str | None = None,
        features: str | None = None,
        title: str = "MIMM-X evaluation report",
        embeddings: bool = False,
    ) -> str:
        """Render report.md and its figures from a metrics.json (history.json and features .npz next to it are
        picked up unless given); ``--embeddings`` adds the t-SNE figures (about a minute per partition). Returns the
        report's path."""
        from mimmx.report import write_report

        folder = Path(metrics).parent
        history = history or _existing(folder / "history.json")
        features = features or _existing(folder / "features_test_balanced.npz")
        return write_report(
            metrics,
            out_dir or str(folder),
            history_file=history,
            features_file=features,
            title=title,
            embeddings=as_bool(embeddings, "embeddings"),
        )

    def methods(self) -> None:
        """Print every benchmarked method with the overrides that select it in ``monai.bundle run training``."""
        for name in METHODS:
            args = shlex.join(method_arguments(name)) or "(the bundle as shipped)"
            print(f"{name:<12} {DESCRIPTIONS[name]}\n{'':<12} {args}")


def _run_bundle(bundle_root: str, run_id: str, config_names: list[str], overrides: dict[str, Any]) -> None:
    """``monai.bundle run`` of a bundle's configs, with 'false'/'true'/'null' overrides read as YAML would."""
    from monai.bundle import run

    root = Path(bundle_root)
    configs = [root / "configs" / name for name in config_names]
    missing = [str(c) for c in configs if not c.is_file()]
    if missing:
        raise ConfigError(f"{bundle_root!r} is not a mimmx bundle folder: missing {missing}.")
    logging_file = root / "configs" / "logging.conf"
    run(
        run_id=run_id,
        bundle_root=str(root),
        config_file=[str(c) for c in configs] if len(configs) > 1 else str(configs[0]),
        logging_file=str(logging_file) if logging_file.is_file() else None,
        **{k: coerce_cli_value(v) for k, v in overrides.items()},
    )


def _existing(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def named_error(error: BaseException) -> MimmxError | None:
    """The mimmx error behind ``error``: MONAI wraps it in config-expression and transform errors."""
    seen: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and e not in seen:
        if isinstance(e, MimmxError):
            return e
        seen.append(e)
        e = e.__cause__ or e.__context__
    return None


def usage() -> str:
    """The commands, one line each, from their docstrings."""
    lines = ["usage: mimmx COMMAND [ARGS] [--debug]", "", "commands:"]
    for name, member in inspect.getmembers(Commands, inspect.isfunction):
        if not name.startswith("_"):
            text = " ".join((inspect.getdoc(member) or "").replace("``", "").split())
            summary = re.split(r"[;(]|\. ", text)[0].strip(" .,")
            lines.append(f"  {name:<10} {summary}")
    lines += ["", "mimmx COMMAND --help shows a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry of the ``mimmx`` command: one readable line for a named error, the traceback with ``--debug``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    try:
        fire.Fire(Commands, command=argv, name="mimmx")
    except Exception as e:
        error = named_error(e)
        if debug or error is None:
            raise
        print(f"mimmx: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
