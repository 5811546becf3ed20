"""What a bundle accepts as input: DICOM modality, SOP class and photometric interpretation; volume geometry.

A classifier scores whatever array it is given: a CT slice, a segmentation object or a colour photograph gets a
confident "effusion 0.99". These checks run inside the bundles' own loading transform
(:class:`mimmx.transforms.CheckedLoadImaged`), so training, evaluation, batch inference and the deployment adapters
built on the bundle's preprocessing refuse the same inputs, each by file name and reason
(:class:`~mimmx.errors.InputRejected`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from mimmx.errors import DataError, InputRejected

__all__ = ["IMAGE_SOP_CLASSES", "SECONDARY_CAPTURE", "check_dicom_header", "check_volume_geometry", "is_dicom"]

# image storage SOP classes per modality (DICOM PS3.4 B.5); anything else (SEG, SR, RT, presentation states) is no
# image a classifier can score
IMAGE_SOP_CLASSES: dict[str, tuple[str, ...]] = {
    "CR": ("1.2.840.10008.5.1.4.1.1.1",),  # Computed Radiography Image Storage
    "DX": (
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1.1",
    ),  # Digital X-Ray, for presentation/processing
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"),  # MR Image Storage, Enhanced MR
}
# a Secondary Capture (a digitised film, a PACS export) is accepted when its Modality is one the bundle takes
SECONDARY_CAPTURE = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3")
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422")


def is_dicom(path: str | os.PathLike) -> bool:
    """A file starting with the DICOM preamble marker, or named .dcm."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def check_dicom_header(path: str | os.PathLike, modalities: Sequence[str]) -> str:
    """The file's photometric interpretation, after checking Modality and SOP Class against ``modalities``.

    Raises InputRejected naming the file and what it is (for example "Modality CT (CT Image Storage)").
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise InputRejected(f"{path}: not a readable DICOM file ({type(e).__name__}: {e}).") from e
    allowed = [m.upper() for m in modalities]
    modality = str(ds.get("Modality", "")).upper()
    sop = str(ds.get("SOPClassUID", ""))
    sop_name = getattr(ds.get("SOPClassUID"), "name", sop) or "no SOP Class"
    if modality not in allowed:
        raise InputRejected(
            f"{path}: DICOM Modality {modality or '(none)'} ({sop_name}); this bundle accepts Modality {allowed}."
        )
    accepted = {uid for m in allowed for uid in IMAGE_SOP_CLASSES.get(m, ())} | set(SECONDARY_CAPTURE)
    if sop not in accepted:
        raise InputRejected(
            f"{path}: DICOM SOP Class {sop_name} ({sop or 'missing'}) is not an image this bundle scores; "
            f"it accepts {[IMAGE_SOP_CLASSES.get(m, ()) for m in allowed]} or a Secondary Capture."
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in PHOTOMETRIC:
        raise InputRejected(
            f"{path}: photometric interpretation {photometric or '(none)'}; expected one of {list(PHOTOMETRIC)}."
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and "MR" not in allowed:
        raise InputRejected(f"{path}: a multi-frame DICOM ({frames} frames); expected a single radiograph.")
    return photometric


def check_volume_geometry(
    path: object,
    affine: np.ndarray,
    shape: Sequence[int],
    spacing_range: Sequence[float] | None,
    max_obliquity: float | None,
) -> None:
    """A brain MRI volume's voxel spacing (mm) lies in ``spacing_range`` and its axes are within ``max_obliquity``
    degrees of the scanner axes; InputRejected otherwise (a 2D photo in a NIfTI header, a 20 cm voxel, a volume
    whose axes point between the anatomical directions that Orientation/Spacing would resample into nonsense)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise DataError(f"{path}: expected a 4 x 4 voxel-to-world affine for a volume, got shape {affine.shape}.")
    axes = affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if spacing_range is not None:
        lo, hi = float(spacing_range[0]), float(spacing_range[1])
        if not np.all((spacing >= lo) & (spacing <= hi)):
            raise InputRejected(
                f"{path}: voxel spacing {np.round(spacing, 3).tolist()} mm (shape {list(shape)}) is outside "
                f"[{lo:g}, {hi:g}] mm; expected a brain MRI volume."
            )
    if max_obliquity is not None:
        cosines = np.abs(axes / np.where(spacing > 0, spacing, 1.0))
        angles = np.degrees(np.arccos(np.clip(cosines.max(axis=0), -1.0, 1.0)))
        if np.any(angles > float(max_obliquity)):
            raise InputRejected(
                f"{path}: the voxel axes are {np.round(angles, 1).tolist()} degrees off the nearest anatomical axes "
                f"(at most {float(max_obliquity):g} accepted); reslice the volume to an axial, coronal or sagittal "
                "orientation first."
            )
