"""Transforms MONAI lacks: image loading that fails by file name and checks what it loaded."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import LoadImaged

from mimmx.errors import DataError

__all__ = ["CheckedLoadImaged"]


class CheckedLoadImaged(LoadImaged):
    """``LoadImaged`` that names the file when it cannot be read, is not ``spatial_dims``-dimensional or holds NaN.

    MONAI reports a failing reader several exceptions deep; a cohort of thousands of files needs the path first.

    Args:
        spatial_dims: expected spatial dimensions (2 for radiographs, 3 for volumes); None skips the check. A
            trailing channel axis of size <= 4 (RGB/RGBA) is allowed for 2D images.
        kwargs: passed to ``LoadImaged``.
    """

    def __init__(self, keys: Any, spatial_dims: int | None = None, **kwargs: Any) -> None:
        super().__init__(keys, **kwargs)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        paths = {key: data.get(key) for key in self.key_iterator(dict(data))}
        try:
            out = super().__call__(data, reader)
        except Exception as e:
            names = ", ".join(str(p) for p in paths.values())
            raise DataError(
                f"{names}: cannot read image ({type(e).__name__}: {e}). Expected a readable PNG, JPEG, DICOM, "
                "NIfTI, NRRD or MHA file."
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
            shape = tuple(image.shape)
            ok = len(shape) == self.spatial_dims or (
                self.spatial_dims == 2 and len(shape) == 3 and shape[-1] <= 4 and shape[0] > 4
            )
            if not ok:
                raise DataError(
                    f"{path}: expected a {self.spatial_dims}D image, got an array of shape {shape}. "
                    "Check that the file is a single image/volume (not a series, time series or multi-frame file)."
                )
        if image.is_floating_point() and not torch.isfinite(image).all():
            raise DataError(f"{path}: the image contains NaN or infinite values.")
