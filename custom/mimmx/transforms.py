"""Transforms MONAI lacks: image loading that fails by file name and checks what it loaded."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import LoadImaged

from mimmx.config import as_bool
from mimmx.data.dicom import check_dicom_series
from mimmx.data.input_checks import check_dicom_header, check_volume_geometry, is_dicom
from mimmx.errors import DataError, InputRejected

__all__ = ["CheckedLoadImaged"]

_SINGULAR_RTOL = 1e-6  # smallest / largest singular value of the affine's spatial block
_LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


class CheckedLoadImaged(LoadImaged):
    """``LoadImaged`` that names the file when it cannot be read or is not the image a model can use.

    MONAI reports a failing reader several exceptions deep, and loads a folder mixing DICOM series or
    missing slices without complaint; a cohort of thousands of scans needs the path and the reason first.

    Checks, each a :class:`~mimmx.errors.DataError` naming the file or folder:

    - a folder is a DICOM series: :func:`mimmx.data.dicom.check_dicom_series` runs first (one series,
      no missing slices, equal matrix size), then MONAI's reader for folders (ITK) loads it;
    - ``spatial_dims``: 2 accepts (H, W) and (H, W, C<=4); 3 accepts (X, Y, Z) and (X, Y, Z, 1) with every
      spatial side > 1, so a 2D image, a single slice or a 4D time series fails here, not in the network;
    - the affine maps voxels to space invertibly (finite, spatial columns independent), so orientation and
      spacing transforms can use it;
    - no NaN or infinite intensity.

    What the bundle accepts (:mod:`mimmx.data.input_checks`), each refusal an
    :class:`~mimmx.errors.InputRejected` with the reason:

    - ``modalities``: a DICOM file (or series) must have one of these Modality values and an image SOP class of
      them (or be a Secondary Capture with such a Modality); MONOCHROME1 (white = low) is inverted to MONOCHROME2;
    - ``grayscale``: an RGB(A) radiograph (PNG, JPEG or DICOM) becomes one luminance channel;
    - ``spacing_range`` (mm), ``field_of_view`` (mm, per axis) and ``max_obliquity`` (degrees) for volumes.

    Args:
        spatial_dims: expected spatial dimensions (2 for radiographs, 3 for volumes); None skips the check.
        modalities: accepted DICOM Modality values (``[CR, DX]``, ``[MR]``); None accepts any DICOM.
        grayscale: convert colour radiographs to one channel.
        spacing_range: [min, max] voxel spacing in mm of a volume.
        field_of_view: [min, max] extent in mm of a volume along each axis.
        max_obliquity: largest angle in degrees between a voxel axis and the nearest anatomical axis.
        kwargs: passed to ``LoadImaged``.
    """

    def __init__(
        self,
        keys: Any,
        spatial_dims: int | None = None,
        modalities: list[str] | None = None,
        grayscale: bool = False,
        spacing_range: list[float] | None = None,
        field_of_view: list[float] | None = None,
        max_obliquity: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, **kwargs)
        self.spatial_dims = spatial_dims
        self.modalities = list(modalities) if modalities else None
        self.grayscale = as_bool(grayscale, "CheckedLoadImaged#grayscale")
        self.spacing_range = spacing_range
        self.field_of_view = field_of_view
        self.max_obliquity = max_obliquity

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        paths = {key: data.get(key) for key in self.key_iterator(dict(data))}
        photometric = {key: self._check_header(path) for key, path in paths.items()}
        try:
            out = super().__call__(data, reader)
        except Exception as e:
            names = ", ".join(str(p) for p in paths.values())
            raise DataError(
                f"{names}: cannot read image ({type(e).__name__}: {e}). Expected a readable PNG, JPEG, DICOM, "
                "NIfTI, NRRD or MHA file, or a folder holding one DICOM series."
            ) from e
        for key, path in paths.items():
            out[key] = self._squeeze_single_slice(out[key])
            if photometric[key] == "MONOCHROME1":
                out[key] = _as_monochrome2(out[key], path)
            if self.grayscale and self.spatial_dims == 2:
                out[key] = _to_luminance(out[key])
            self._check(out[key], path)
        return out

    def _check_header(self, path: Any) -> str | None:
        """Series and DICOM header checks before any pixel is read; the photometric interpretation of a DICOM."""
        if not isinstance(path, (str, Path)):
            return None
        first = None
        if Path(path).is_dir():
            first = check_dicom_series(path)[0]
        elif self.modalities is not None and is_dicom(path):
            first = path
        if first is None or self.modalities is None:
            return None
        photometric = check_dicom_header(first, self.modalities)
        if photometric not in ("MONOCHROME1", "MONOCHROME2") and not self.grayscale:
            raise InputRejected(f"{path}: a colour DICOM ({photometric}); expected a grayscale image.")
        return photometric

    def _squeeze_single_slice(self, image: Any) -> Any:
        """A single-frame DICOM radiograph loads as a (W, H, 1) volume; for 2D input it is a 2D image."""
        if self.spatial_dims == 2 and isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[2] == 1:
            image = image[:, :, 0]  # a colour DICOM frame: (W, H, 1, 3) -> (W, H, 3)
            if hasattr(image, "meta"):
                image.meta["spatial_shape"] = image.shape[:2]
            return image
        if self.spatial_dims != 2 or not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[-1] != 1:
            return image
        channel = getattr(image, "meta", {}).get("original_channel_dim", None)
        if isinstance(channel, int) and channel >= 0:
            return image
        image = image[..., 0]
        if hasattr(image, "meta"):
            image.meta["spatial_shape"] = image.shape
        return image

    def _check(self, image: Any, path: Any) -> None:
        if not isinstance(image, torch.Tensor):
            return
        if self.spatial_dims is not None:
            self._check_shape(image, path)
        _check_affine(getattr(image, "affine", None), image.ndim, path)
        if _is_nifti(path):
            _check_affine(_stored_nifti_affine(path), image.ndim, path)
        if image.is_floating_point() and not torch.isfinite(image).all():
            raise InputRejected(f"{path}: the image contains NaN or infinite values.")
        if self.spatial_dims == 3 and getattr(image, "affine", None) is not None:
            self._check_geometry(image, path)

    def _check_geometry(self, image: torch.Tensor, path: Any) -> None:
        affine = np.asarray(image.affine.detach().cpu(), dtype=np.float64)
        shape = [s for s in image.shape if s > 1][:3]
        check_volume_geometry(path, affine, shape, self.spacing_range, self.max_obliquity)
        if self.field_of_view is not None:
            extent = np.linalg.norm(affine[:3, :3], axis=0) * np.asarray(shape[:3], dtype=np.float64)
            lo, hi = (float(v) for v in self.field_of_view)
            if not np.all((extent >= lo) & (extent <= hi)):
                raise InputRejected(
                    f"{path}: field of view {np.round(extent, 1).tolist()} mm (shape {shape}) is outside "
                    f"[{lo:g}, {hi:g}] mm per axis; expected a whole-head MRI volume."
                )

    def _check_shape(self, image: torch.Tensor, path: Any) -> None:
        shape = tuple(image.shape)
        if self.spatial_dims == 2:
            ok = len(shape) == 2 or (len(shape) == 3 and shape[-1] <= 4 and shape[0] > 4)
        elif self.spatial_dims == 3:
            ok = _is_volume(shape, getattr(image, "meta", {}).get("original_channel_dim", None))
        else:
            ok = len(shape) == self.spatial_dims
        if not ok:
            raise DataError(
                f"{path}: expected a {self.spatial_dims}D image, got an array of shape {shape}. "
                "Check that the file is a single image/volume (not one slice, a series, a time series or a "
                "multi-frame file)."
            )


def _as_monochrome2(image: torch.Tensor, path: Any) -> torch.Tensor:
    """MONOCHROME1 stores white as the lowest value; make bone bright, as in MONOCHROME2 and PNG.

    ITK's DICOM reader already inverts MONOCHROME1 and pydicom does not, so the stored pixels decide: when the
    loaded mean equals the stored mean the reader kept the raw values and they are inverted here.
    """
    import pydicom

    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    if not np.isclose(float(image.float().mean()), float(stored.mean()), rtol=1e-4, atol=1e-3):
        return image
    return image.max() + image.min() - image


def _to_luminance(image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3|4) colour, channel last, -> (H, W) luminance; alpha is dropped. Grayscale passes unchanged."""
    channel = getattr(image, "meta", {}).get("original_channel_dim", None)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or channel != -1:
        return image
    weights = torch.as_tensor(_LUMINANCE, dtype=torch.float32)
    gray = (image[..., :3].float() * weights).sum(-1)
    if hasattr(image, "meta"):
        gray = type(image)(gray, meta=dict(image.meta)) if not hasattr(gray, "meta") else gray
        gray.meta["original_channel_dim"] = float("nan")
        gray.meta["spatial_shape"] = gray.shape
    return gray


def _is_volume(shape: tuple[int, ...], channel_dim: Any) -> bool:
    """(X, Y, Z), or with one channel axis: trailing of size 1, or leading when MONAI stacked a list of files."""
    if len(shape) == 4 and shape[-1] == 1:
        shape = shape[:-1]
    elif len(shape) == 4 and channel_dim == 0:
        shape = shape[1:]
    return len(shape) == 3 and min(shape) > 1


def _is_nifti(path: Any) -> bool:
    return isinstance(path, (str, Path)) and str(path).lower().endswith((".nii", ".nii.gz"))


def _stored_nifti_affine(path: str | Path) -> np.ndarray:
    """The affine in the file's header: MONAI replaces a singular sform by the qform/pixdim without a word."""
    return nib.load(str(path)).affine


def _check_affine(affine: Any, ndim: int, path: Any) -> None:
    """A voxel-to-world affine with non-finite entries or dependent axes makes Orientation/Spacing meaningless."""
    if affine is None:
        return
    affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    rank = affine.shape[0] - 1
    if not np.isfinite(affine).all():
        raise DataError(f"{path}: the image's affine (voxel to world) has non-finite entries:\n{affine}")
    singular = np.linalg.svd(affine[:rank, : min(rank, ndim)], compute_uv=False)
    if singular.size == 0 or singular.max() == 0 or singular.min() <= _SINGULAR_RTOL * singular.max():
        raise DataError(
            f"{path}: the image's affine (voxel to world) is not invertible (determinant ~ 0):\n{affine}\n"
            "Fix the header (NIfTI sform/qform, DICOM ImageOrientationPatient/PixelSpacing) before training."
        )
