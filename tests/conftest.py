"""Shared fixtures: write a small cohort table in CheXpert's own CSV format, with real image files."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
).split(",")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small critics and probes: one thread avoids oversubscription when the machine is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def chexpert_header() -> list[str]:
    return list(CHEXPERT_HEADER)


@pytest.fixture
def write_cohort() -> Callable[..., Path]:
    """``write(csv_path, rows, header=CHEXPERT_HEADER, images=True)``: rows are dicts (absent cells blank).

    Images are tiny grayscale PNG/JPEG files at ``csv_path.parent.parent / Path`` (CheXpert's layout,
    where Path starts with the release folder holding the CSV).
    """

    def write(csv_path: Path, rows: Sequence[dict], header: Sequence[str] = CHEXPERT_HEADER, images: bool = True):
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(header), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in header})
        if images:
            for row in rows:
                image = csv_path.parent.parent / row["Path"]
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (8, 8), color=128).save(image)
        return csv_path

    return write
