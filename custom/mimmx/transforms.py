"""Transforms MONAI lacks: image loading that fails by file name and checks what it loaded."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import LoadImaged

from mimmx.data.dicom import check_dicom_series
from mimmx.errors import DataError

__all__ = ["CheckedLoadImaged"]

_SINGULAR_RTOL = 1e-6  # smallest / largest singular value of the affine's spatial block


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

    Args:
        spatial_dims: expected spatial dimensions (2 for radiographs, 3 for volumes); None skips the check.
        kwargs: passed to ``LoadImaged``.
    """

    def __init__(self, keys: Any, spatial_dims: int | None = None, **kwargs: Any) -> None:
        super().__init__(keys, **kwargs)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        paths = {key: data.get(key) for key in self.key_iterator(dict(data))}
        for path in paths.values():
            if isinstance(path, (str, Path)) and Path(path).is_dir():
                check_dicom_series(path)
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
            self._check(out[key], path)
        return out

    def _squeeze_single_slice(self, image: Any) -> Any:
        """A single-frame DICOM radiograph loads as a (W, H, 1) volume; for 2D input it is a 2D image."""
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
            raise DataError(f"{path}: the image contains NaN or infinite values.")

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
