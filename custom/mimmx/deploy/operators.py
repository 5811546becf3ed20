"""MONAI Deploy operators for a classification bundle (monai-deploy-app-sdk 4.0; optional, its own environment).

Two small operators replace the SDK's ``MonaiBundleInferenceOperator`` and complete its SR writer:

- :class:`BundleClassifierOperator` takes the selected DICOM series (not a loaded volume) and classifies their
  files with the bundle's own preprocessing and TorchScript model (:class:`mimmx.deploy.classifier.BundleClassifier`).
  It works around three behaviours of the stock bundle operator: it reads ``metadata["nifti_affine_transform"]``,
  which ``DICOMSeriesToVolumeOperator`` no longer writes (``"affine"``), so DICOM input crashes; for
  ``probabilities`` outputs it maps each *value* through ``int()`` to a class name, so the labels are wrong; and it
  drops every preprocessing transform named ``LoadImage*``, so a single-frame radiograph stays a 3D volume.
- :class:`ClassificationWriterOperator` writes the JSON result and a DICOM Basic Text SR (the stock writer's
  ``write``) into a staging folder and moves both into the output folder only when both exist: no partial output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from monai.deploy.operators.dicom_text_sr_writer_operator import DICOMTextSRWriterOperator

from mimmx.deploy.classifier import BundleClassifier
from mimmx.errors import DataError, MimmxError

__all__ = ["BundleClassifierOperator", "ClassificationWriterOperator", "result_text"]

RESULT_FILE = "result.json"


def _selected_series(study_selected_series_list) -> list:
    return [s.series for sss in study_selected_series_list or [] for s in sss.selected_series]


class BundleClassifierOperator(Operator):
    """Selected series in, ``result`` (a dict: model identity and one entry per classified image) out.

    Input the bundle refuses (no selected series, an image its loader rejects) emits nothing, so the writer never
    runs and nothing is written; the error is kept in ``failure`` for the caller to report by name after the graph
    stops (an exception would surface as the executor's traceback instead).
    """

    def __init__(self, fragment: Fragment, *args, classifier: BundleClassifier, **kwargs) -> None:
        self.classifier = classifier
        self.failure: MimmxError | None = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("result")

    def compute(self, op_input, op_output, context) -> None:
        try:
            result = self._classify(_selected_series(op_input.receive("study_selected_series_list")))
        except MimmxError as err:
            self.failure = err
            return
        op_output.emit(result, "result")

    def _classify(self, series_list: list) -> dict[str, Any]:
        if not series_list:
            raise DataError("no DICOM series matched the selection rules; nothing to classify.")
        entries = []
        for series in series_list:
            datasets = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
            by_file = {str(Path(ds.filename)): ds for ds in datasets}
            for entry in self.classifier.classify_files(list(by_file)):
                uids = [str(by_file[f].SOPInstanceUID) for f in entry["files"] if f in by_file]
                if not uids:  # a 3D series: the entry names the temporary series folder
                    uids = [str(ds.SOPInstanceUID) for ds in datasets]
                entries.append(
                    {
                        "study_instance_uid": str(datasets[0].get("StudyInstanceUID", "")),
                        "series_instance_uid": str(series.SeriesInstanceUID),
                        "sop_instance_uids": uids,
                        "probabilities": entry["probabilities"],
                        "predicted_class": entry["predicted_class"],
                    }
                )
        return {**self.classifier.info, "results": entries}


def result_text(result: dict[str, Any]) -> str:
    """The SR's text: the model and, per image, the class and every probability."""
    lines = [f"{result['name']} {result['version']} (model.ts SHA-256 {result['model_sha256']})"]
    for n, entry in enumerate(result["results"], 1):
        probs = ", ".join(f"{k} {v:.4f}" for k, v in entry["probabilities"].items())
        lines.append(f"Image {n}: {entry['predicted_class']} (probabilities: {probs})")
    lines.append("Research use only; not for clinical diagnosis.")
    return "\n".join(lines)


class ClassificationWriterOperator(DICOMTextSRWriterOperator):
    """``result`` and the selected series in; ``result.json`` and one Basic Text SR file out, both or neither."""

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("result")
        spec.input(self.input_name_dcm_series).condition(ConditionType.NONE)

    def compute(self, op_input, op_output, context) -> None:
        result = op_input.receive("result")
        series = _selected_series(op_input.receive(self.input_name_dcm_series))
        out = Path(self.output_folder)
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".mimmx_result_", dir=out))
        try:
            self.write(result_text(result), series[0] if series else None, staging)
            sr_files = list(staging.glob("*.dcm"))
            result["sr_file"] = sr_files[0].name if sr_files else None
            (staging / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
            for path in sorted(staging.iterdir()):
                os.replace(path, out / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
