"""What a deployed classifier accepts: a folder of DICOM files, checked before anything runs or is written.

The SDK's loader skips files it cannot parse with a warning and loads instances without pixels (a Structured
Report, a presentation state) as series of their own; a truncated file fails only when its pixels are decoded,
deep inside an operator. A deployment must instead refuse bad input by name, before any output exists. So every
file is parsed and decoded here with pydicom, and the images of the modalities the bundle was trained on must be
there.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mimmx.errors import DataError

__all__ = ["DicomInstance", "MODALITIES", "check_dicom_folder", "modalities_for"]

# network_data_format.inputs.image.modality -> DICOM Modality values an input series may have
MODALITIES = {"xray": ("CR", "DX"), "mr": ("MR",), "ct": ("CT",)}


@dataclass(frozen=True)
class DicomInstance:
    path: Path
    modality: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str


def modalities_for(metadata_modality: str) -> tuple[str, ...]:
    """DICOM modalities for the metadata's ``modality`` (``xray`` -> CR, DX)."""
    key = str(metadata_modality).lower().replace("-", "")
    if key not in MODALITIES:
        raise DataError(f"metadata modality {metadata_modality!r}: expected one of {sorted(MODALITIES)}.")
    return MODALITIES[key]


def check_dicom_folder(folder: str | os.PathLike, modalities: tuple[str, ...]) -> list[DicomInstance]:
    """Every file under ``folder`` parsed and decoded; returns the image instances of the wanted modalities.

    Raises:
        DataError: no such folder, no file, a file that is not DICOM or whose pixel data is truncated, or no image
            of the wanted modalities (the message lists what the folder holds instead).
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"DICOM input {root}: no such folder.")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise DataError(f"DICOM input {root}: the folder holds no file.")
    images, others = [], Counter()
    for path in files:
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as err:
            raise DataError(f"DICOM input {path}: not a readable DICOM file ({err}).") from err
        sop_class = str(ds.get("SOPClassUID", ""))
        modality = str(ds.get("Modality", ""))
        if "PixelData" not in ds:
            name = getattr(ds.get("SOPClassUID"), "name", sop_class) or "unknown SOP class"
            others[f"{modality or '?'} {name} (no pixel data)"] += 1
            continue
        try:
            ds.pixel_array  # noqa: B018  (decodes: a truncated file fails here, by name)
        except Exception as err:
            raise DataError(f"DICOM input {path}: the pixel data cannot be decoded ({err}).") from err
        if modality not in modalities:
            others[f"{modality or '?'} image"] += 1
            continue
        images.append(
            DicomInstance(
                path=path,
                modality=modality,
                study_uid=str(ds.get("StudyInstanceUID", "")),
                series_uid=str(ds.get("SeriesInstanceUID", "")),
                sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                sop_class_uid=sop_class,
            )
        )
    if not images:
        found = ", ".join(f"{n} x {kind}" for kind, n in sorted(others.items())) or "nothing usable"
        raise DataError(f"DICOM input {root}: no {'/'.join(modalities)} image series; the folder holds {found}.")
    return images
