"""MONAI Label app folder: one classification infer task per exported bundle given with ``--conf bundles``.

    monailabel start_server --app <this folder> --studies <images> --host 127.0.0.1 --port 8000 \
        --conf bundles /path/to/mimmx_cxr_classification,/path/to/mimmx_mri_classification

The task is named after the bundle folder (``POST /infer/mimmx_cxr_classification?image=<id>&output=json``).
"""

from __future__ import annotations

from pathlib import Path

from monailabel.interfaces.app import MONAILabelApp

from mimmx.deploy.label import BundleClassificationInferTask


class MimmxLabelApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles = [Path(p) for p in conf.get("bundles", "").split(",") if p]
        if not self.bundles:
            raise ValueError("mimmx label app: pass --conf bundles <exported bundle folder>[,<another>].")
        super().__init__(app_dir, studies, conf, name="mimmx", description="MIMM-X classifiers (inference only)")

    def init_infers(self):
        return {b.name: BundleClassificationInferTask(b) for b in self.bundles}

    def init_trainers(self):
        return {}  # the stock bundle trainer passes no factor labels; train with monai.bundle run training
