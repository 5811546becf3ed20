"""A MONAI Label infer task serving an exported mimmx bundle as a classifier (monailabel 0.8.5, own environment).

MONAI Label's stock bundle app guesses the task type from the bundle's folder name (anything without
"classification" in it becomes segmentation) and appends a restore-to-original-space post-transform that breaks a
vector of class probabilities; its training task passes only image and label, so the factor labels MIMM-X trains
on never reach the trainer. This task therefore serves inference only: the image the client names goes through
the bundle's own preprocessing and TorchScript model (:class:`mimmx.deploy.classifier.BundleClassifier`), and the
response is JSON with the class probabilities. Training stays with ``monai.bundle run training``.
"""

from __future__ import annotations

import os
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from mimmx.deploy.classifier import BundleClassifier

__all__ = ["BundleClassificationInferTask"]


class BundleClassificationInferTask(InferTask):
    """``POST /infer/<name>?image=<id>&output=json`` -> probabilities, predicted class, model identity.

    Args:
        bundle_dir: the exported bundle folder.
    """

    def __init__(self, bundle_dir: str | os.PathLike) -> None:
        self.classifier = BundleClassifier(bundle_dir)
        super().__init__(
            type=InferType.CLASSIFICATION,
            labels={name: i for i, name in enumerate(self.classifier.class_names)},
            dimension=self.classifier.spatial_dims,
            description=str(self.classifier.metadata.get("task", self.classifier.root.name)),
        )

    def is_valid(self) -> bool:
        return self.classifier.model_file.is_file()

    def __call__(self, request: dict[str, Any]) -> tuple[None, dict[str, Any]]:
        probs = self.classifier.probabilities(request["image"])
        best = max(range(len(probs)), key=probs.__getitem__)
        result = {
            "probabilities": dict(zip(self.classifier.class_names, probs)),
            "predicted_class": self.classifier.class_names[best],
        }
        return None, {**result, **self.classifier.info}
