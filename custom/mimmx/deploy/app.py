"""The MONAI Deploy application for an exported mimmx bundle: DICOM folder in, JSON result and DICOM SR out.

    loader (DICOMDataLoaderOperator) -> series selector (rules from the bundle's modality)
      -> BundleClassifierOperator (the bundle's preprocessing + model.ts) -> ClassificationWriterOperator

One application serves either bundle: the series rules come from ``network_data_format.inputs.image.modality``
(X-ray: CR or DX; MR), the rest from the bundle itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_utils import EquipmentInfo, ModelInfo

from mimmx.deploy.classifier import BundleClassifier
from mimmx.deploy.dicom_inputs import modalities_for
from mimmx.deploy.operators import BundleClassifierOperator, ClassificationWriterOperator

__all__ = ["BundleClassifierApp", "selection_rules"]


def selection_rules(modalities: tuple[str, ...]) -> str:
    """DICOMSeriesSelectorOperator rules selecting every series of the given modalities."""
    return json.dumps(
        {"selections": [{"name": "images", "conditions": {"Modality": f"(?i)^({'|'.join(modalities)})$"}}]}
    )


class BundleClassifierApp(Application):
    """Classifies the images of a DICOM study folder with an exported mimmx bundle.

    Args:
        bundle_dir: the exported bundle folder.
        input_folder, output_folder: DICOM files in; ``result.json`` and the SR file out.
    """

    def __init__(self, bundle_dir: str, input_folder: str, output_folder: str, *args, **kwargs) -> None:
        self.classifier = BundleClassifier(bundle_dir)
        self.input_folder, self.output_folder = Path(input_folder), Path(output_folder)
        self.classifier_op: BundleClassifierOperator | None = None
        super().__init__(*args, **kwargs)

    @property
    def failure(self) -> Exception | None:
        """The named error that stopped classification (nothing was written), or None."""
        return self.classifier_op.failure if self.classifier_op else None

    def compose(self) -> None:
        info = self.classifier.info
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=self.input_folder, name="loader")
        rules = selection_rules(modalities_for(self.classifier.modality))
        selector = DICOMSeriesSelectorOperator(self, rules=rules, all_matched=True, name="selector")
        classifier = BundleClassifierOperator(self, classifier=self.classifier, name="classifier")
        self.classifier_op = classifier
        writer = ClassificationWriterOperator(
            self,
            output_folder=self.output_folder,
            copy_tags=True,
            model_info=ModelInfo("mimmx", info["bundle"], str(info["version"]), ""),
            equipment_info=EquipmentInfo(manufacturer="mimmx", manufacturer_model=info["bundle"]),
            custom_tags={"SeriesDescription": "MIMM-X classification; not for clinical use"},
            name="writer",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, classifier, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(classifier, writer, {("result", "result")})
        self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
