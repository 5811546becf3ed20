"""An exported bundle as a classifier of DICOM files: its own preprocessing, its TorchScript model, softmax.

Used by the MONAI Deploy operator and the MONAI Label infer task alike. It deliberately runs the bundle's whole
``preprocessing`` from ``configs/inference.json``, loader included, on the input files, so the tensor the model
sees is the one ``python -m monai.bundle run --config_file configs/inference.json`` builds for the same file, and
the probabilities agree with it (to TorchScript's float rounding). The SDK's bundle operator instead feeds an
already-loaded volume and drops every transform named ``LoadImage*``, which leaves a single-frame radiograph 3D
and changes orientation handling.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimmx.errors import ConfigError, DataError

__all__ = ["BundleClassifier"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class BundleClassifier:
    """Class probabilities for image files, from an exported (self-contained) bundle folder.

    Args:
        bundle_dir: the folder ``mimmx export-bundle`` wrote (``configs/``, ``models/model.ts``, ``scripts/``).
        device: torch device for the TorchScript model.

    Raises:
        ConfigError: a file of the bundle is missing or its inference config lacks ``preprocessing``.
    """

    def __init__(self, bundle_dir: str | os.PathLike, device: str = "cpu") -> None:
        import torch
        from monai.bundle import ConfigParser

        self.root = Path(bundle_dir).resolve()
        needed = ["configs/metadata.json", "configs/inference.json", "models/model.ts", "scripts/__init__.py"]
        missing = [f for f in needed if not (self.root / f).is_file()]
        if missing:
            raise ConfigError(f"{self.root} is not an exported mimmx bundle: missing {missing}.")
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))  # the bundle's own code is ``scripts.*``, as in the model zoo
        self.metadata = json.loads((self.root / "configs/metadata.json").read_text())
        parser = ConfigParser(ConfigParser.load_config_file(str(self.root / "configs/inference.json")))
        parser["bundle_root"] = str(self.root)
        for key in ("preprocessing", "postprocessing", "class_names"):
            if key not in parser:
                raise ConfigError(f"{self.root / 'configs/inference.json'}: no `{key}` id.")
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.postprocessing = parser.get_parsed_content("postprocessing")
        self.class_names = [str(c) for c in parser.get_parsed_content("class_names")]
        image = self.metadata["network_data_format"]["inputs"]["image"]
        self.spatial_dims = len(image["spatial_shape"])
        self.modality = str(image.get("modality", ""))
        self.model_file = self.root / "models" / "model.ts"
        self.model_sha256 = _sha256(self.model_file)
        self.device = torch.device(device)
        self.model = torch.jit.load(str(self.model_file), map_location=self.device).eval()

    @property
    def info(self) -> dict[str, Any]:
        """What identifies the model in a result: bundle name and version, model file and its SHA-256."""
        return {
            "bundle": self.root.name,
            "name": self.metadata.get("name", self.root.name),
            "version": self.metadata.get("version"),
            "model_file": "models/model.ts",
            "model_sha256": self.model_sha256,
            "class_names": self.class_names,
        }

    def probabilities(self, image: str | os.PathLike) -> list[float]:
        """Softmax probabilities (one per class) for one image file, or one DICOM series folder for a 3D bundle.

        Raises:
            DataError: the bundle's preprocessing refused the image; the message is its root cause.
        """
        import torch

        try:
            data = self.preprocessing({"image": str(image)})
        except Exception as err:  # MONAI wraps the loader's named error in "applying transform ..."
            cause = err
            while cause.__cause__ is not None:
                cause = cause.__cause__
            raise DataError(str(cause) if str(image) in str(cause) else f"cannot classify {image}: {cause}") from err
        with torch.no_grad():
            logits = self.model(torch.as_tensor(data["image"]).unsqueeze(0).to(self.device))
        pred = self.postprocessing({"pred": logits[0]})["pred"]
        return [float(p) for p in torch.as_tensor(pred).flatten().cpu()]

    def classify_files(self, files: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
        """One entry per radiograph (2D bundle) or one for the whole series (3D bundle) of one DICOM series.

        Raises:
            DataError: no file given.
        """
        paths = [Path(f) for f in files]
        if not paths:
            raise DataError("classify: the selected DICOM series has no instance.")
        if self.spatial_dims == 2:
            return [self._entry(p, self.probabilities(p)) for p in paths]
        with tempfile.TemporaryDirectory(prefix="mimmx_series_") as folder:  # the series alone, as the loader wants
            for n, path in enumerate(paths):
                os.symlink(path.resolve(), Path(folder) / f"{n:05d}_{path.name}")
            try:
                probs = self.probabilities(folder)
            except DataError as err:  # name the input, not the temporary folder
                where = f"the series of {len(paths)} file(s) in {paths[0].parent}"
                raise DataError(str(err).replace(str(folder), where)) from err
            return [self._entry(Path(folder), probs, paths)]

    def _entry(self, image: Path, probs: list[float], files: Sequence[Path] | None = None) -> dict[str, Any]:
        best = max(range(len(probs)), key=probs.__getitem__)
        return {
            "files": [str(f) for f in (files or [image])],
            "probabilities": dict(zip(self.class_names, probs)),
            "predicted_class": self.class_names[best],
        }
