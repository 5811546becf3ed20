"""Synthetic T1-weighted brain-MRI cohort in the cohort-table format (the MRI bundle's default data).

The cohort is written as real NIfTI volumes plus a ``participants.csv`` read by
:func:`mimmx.data.cohort.read_cohort`, so it enters the pipeline exactly where a UK Biobank or NAKO
cohort would (no in-memory shortcut). Each subject has a causal target (brain atrophy) and three
spurious factors that leave an image cue: field strength (global: noise, contrast, bias field),
site (local: a bright fiducial capsule taped to the scalp at a site-specific place) and sex (head
size). Each factor agrees with the target with probability ``rho`` independently, so ``rho=0.5``
gives a cohort balanced over all buckets; the bundle imposes its training correlation later by
subsampling buckets. Age is drawn independently of everything and leaves no cue.

Anatomy is drawn analytically in head coordinates (the head spans about [-0.9, 0.9] of the
smaller half field of view) with per-subject pose and size, then rendered in batches with numpy.
Tissues are soft-edged (partial volume) and have T1 contrast: bright scalp fat, dark skull, dark
CSF, grey matter darker than white matter, dark ventricles. The cortex is thicker than in life so
that it survives 4 mm voxels. Atrophy is subtler than the spurious cues and varies per subject:
larger ventricles, a wider CSF rim, wider sulci and a thinner cortex, scaled by a severity drawn in
[severity_min, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from mimmx.data.cues import FromKwargs
from mimmx.io_utils import atomic_write_csv, atomic_write_json

__all__ = [
    "COHORT_FOLDER",
    "CSV_NAME",
    "COLUMNS",
    "SITES",
    "SITE_FIDUCIALS",
    "MriCueConfig",
    "draw_subjects",
    "generate_mri_cohort",
    "site_affine",
]

COHORT_FOLDER = "mri_cohort"
CSV_NAME = "participants.csv"
COLUMNS = ("subject_id", "image", "atrophy", "sex", "age", "site", "field_strength")
SITES = ("site_a", "site_b")
# Where each site tapes its fiducial capsule to the scalp: a direction from the head centre in (R, A, S).
SITE_FIDUCIALS = {"site_a": (0.55, 0.55, 0.62), "site_b": (-0.55, -0.50, 0.66)}
# How each site stores its volumes: axis flips of the RAS array (site_b stores LPS, as DICOM-derived tools do).
_SITE_FLIPS = {"site_a": (), "site_b": (0, 1)}

_BATCH_VOXELS = 1 << 18  # voxels per rendered batch: temporaries of 1 MB stay in cache
_INT16_SCALE = 800.0  # white matter at 3T without bias/gain -> ~800 in the stored int16

# Head geometry in head units (ellipsoid semi-axes along R, A, S).
_HEAD = (0.74, 0.88, 0.82)
_SKULL_OUTER, _SKULL_INNER = 0.93, 0.85  # fractions of the head ellipsoid
_BRAIN = (0.58, 0.70, 0.60)
_BRAIN_CENTRE = (0.0, -0.02, 0.06)
_SCALP = 0.85  # T1 intensity of scalp fat; the fiducial is brighter by site_artifact_contrast


@dataclass(frozen=True)
class MriCueConfig(FromKwargs):
    """Strengths of the image cues; intensities are relative to white matter at 3T (= 1).

    Attributes:
        ventricle_scale: linear size of the lateral ventricles at full atrophy relative to healthy
            (volume grows with its cube).
        ventricle_jitter: log-normal spread of healthy ventricle size (people differ a lot).
        csf_widening: shrinkage of the brain away from the skull at full atrophy, as a fraction of its radius.
        sulcal_widening: how much wider the sulci get at full atrophy (drop of the sulcal threshold on a
            pattern in [-1, 1]).
        cortex_thinning: fraction of cortical thickness lost at full atrophy.
        severity_min: smallest atrophy severity (drawn uniformly in [severity_min, 1] per atrophic subject).
        noise_std: Rician noise level at 3T.
        field_noise: extra noise level at 1.5T (lower SNR).
        field_contrast: fraction of grey/white and CSF/white contrast lost at 1.5T.
        bias_strength: amplitude of the smooth multiplicative bias field at 3T (central brightening plus
            a gradient); 1.5T gets a quarter of it.
        site_artifact_contrast: brightness of the site's fiducial capsule above the scalp fat.
        site_artifact_radius: radius of the capsule in head units (about 1.5 voxels at 32^3).
        sex_size_ratio: linear head size of men relative to women (brain and ventricles scale with it).
        head_size_jitter: relative spread of head size within a sex.
        intensity_jitter: half-range of the random global gain (1 +- jitter).
        pose_jitter: scale of the random head position and rotation; 1 is a few voxels / degrees, 0 none.
    """

    ventricle_scale: float = 1.35
    ventricle_jitter: float = 0.15
    csf_widening: float = 0.05
    sulcal_widening: float = 0.3
    cortex_thinning: float = 0.3
    severity_min: float = 0.3
    noise_std: float = 0.02
    field_noise: float = 0.03
    field_contrast: float = 0.3
    bias_strength: float = 0.25
    site_artifact_contrast: float = 0.5
    site_artifact_radius: float = 0.09
    sex_size_ratio: float = 1.10
    head_size_jitter: float = 0.02
    intensity_jitter: float = 0.1
    pose_jitter: float = 1.0


# ----------------------------------------------------------------------------------------------
# Subjects: labels and per-subject anatomy parameters
# ----------------------------------------------------------------------------------------------


def draw_subjects(
    rng: np.random.Generator, n: int, rho: float, prevalence: float, age_gap_fraction: float = 0.03
) -> dict[str, np.ndarray]:
    """Target, the three factors (each equal to the target with probability rho) and age (independent).

    Age is <= 50 or >= 60 with equal probability (MIMM's age buckets); ``age_gap_fraction`` of the
    subjects are 51-59, which a factor with bins [[null, 50], [60, null]] drops.
    """
    y = rng.random(n) < prevalence

    def factor() -> np.ndarray:
        return np.where(rng.random(n) < rho, y, ~y)

    male, site_b, field_3t = factor(), factor(), factor()
    old = rng.random(n) < 0.5
    age = np.where(old, rng.integers(60, 81, n), rng.integers(30, 51, n))
    age = np.where(rng.random(n) < age_gap_fraction, rng.integers(51, 60, n), age)
    return {"y": y, "male": male, "site_b": site_b, "field_3t": field_3t, "age": age}


def _anatomy_params(rng: np.random.Generator, s: dict[str, np.ndarray], cues: MriCueConfig) -> dict[str, np.ndarray]:
    """Per-subject float parameters of the volume (pose, size, atrophy, scanner)."""
    n = len(s["y"])
    j = cues.pose_jitter
    severity = s["y"] * rng.uniform(cues.severity_min, 1.0, n)
    root = np.sqrt(cues.sex_size_ratio)
    head = np.where(s["male"], root, 1 / root) * (1 + rng.normal(0, cues.head_size_jitter, n))
    field_15 = (~s["field_3t"]).astype(np.float64)
    k = rng.normal(size=(n, 3, 3))
    k *= (2 * np.pi / 0.3) / np.linalg.norm(k, axis=2, keepdims=True)  # sulcal pattern: ~0.3 head units period
    grad = rng.normal(size=(n, 3))
    grad /= np.linalg.norm(grad, axis=1, keepdims=True)
    fid = np.array([SITE_FIDUCIALS[SITES[int(b)]] for b in s["site_b"]]).reshape(n, 3)
    p = {
        "cx": rng.normal(0, 0.02 * j, n),
        "cy": rng.normal(0, 0.02 * j, n),
        "cz": rng.normal(0, 0.02 * j, n),
        "yaw": rng.normal(0, 0.05 * j, n),
        "pitch": rng.normal(0, 0.05 * j, n),
        "head": 0.95 * head,
        "shrink": 1 - cues.csf_widening * severity + rng.normal(0, 0.01, n),
        "cortex": 0.1 * (1 - cues.cortex_thinning * severity) * (1 + rng.normal(0, 0.05, n)),
        "sulcus_thr": 0.35 - cues.sulcal_widening * severity + rng.normal(0, 0.03, n),
        "ventricle": np.exp(rng.normal(0, cues.ventricle_jitter, n)) * (1 + (cues.ventricle_scale - 1) * severity),
        "contrast": 1 - cues.field_contrast * field_15,
        "bias": cues.bias_strength * np.where(field_15 > 0, 0.25, 1.0) * rng.uniform(0.8, 1.2, n),
        "gain": 1 + rng.uniform(-cues.intensity_jitter, cues.intensity_jitter, n),
        "sigma": (cues.noise_std + cues.field_noise * field_15) * rng.uniform(0.9, 1.1, n),
        "fiducial": np.full(n, cues.site_artifact_contrast),
        "fid_r": np.full(n, cues.site_artifact_radius),
    }
    for i, axis in enumerate("xyz"):
        p[f"g{axis}"] = grad[:, i]
        p[f"fid{axis}"] = fid[:, i] + rng.normal(0, 0.03, n)
        for c in range(3):
            p[f"k{c}{axis}"] = k[:, c, i]
    for c in range(3):
        p[f"phase{c}"] = rng.uniform(0, 2 * np.pi, n)
    return {key: np.asarray(v, dtype=np.float32) for key, v in p.items()}


# ----------------------------------------------------------------------------------------------
# Rendering (batched: every parameter is a (B, 1, 1, 1) array, every volume a (B, X, Y, Z) array)
# ----------------------------------------------------------------------------------------------


def _grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre world coordinates (R, A, S) in units of the smaller half field of view, to broadcast."""
    half = min(n * s for n, s in zip(shape, spacing)) / 2
    axes = [((np.arange(n) - (n - 1) / 2) * s / half).astype(np.float32) for n, s in zip(shape, spacing)]
    return axes[0][None, :, None, None], axes[1][None, None, :, None], axes[2][None, None, None, :]


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance d (> 0 inside): partial volume over ``width``. Overwrites d."""
    d *= 1 / width
    d += 0.5
    np.maximum(d, 0.0, out=d)
    return np.minimum(d, 1.0, out=d)


def _distance(u, v, w, centre: Sequence, axes: Sequence) -> np.ndarray:
    """First-order signed distance to an ellipsoid's surface (> 0 inside), in head units: cheap and exact enough."""
    r2, grad = 0.0, 0.0
    for c, c0, a in zip((u, v, w), centre, axes):
        q = c - c0
        q *= 1 / a  # the unit-sphere coordinate
        r2 = r2 + q * q
        q *= 1 / a
        grad = grad + q * q
    grad = np.sqrt(grad)
    grad *= 2
    grad += 1e-3
    r2 -= 1
    r2 /= grad
    return np.negative(r2, out=r2)


def _inside(u, v, w, centre: Sequence, axes: Sequence, edge: float) -> np.ndarray:
    """Soft mask of an ellipsoid, its edge one voxel of partial volume."""
    return _ramp(_distance(u, v, w, centre, axes), edge)


def _paint(img: np.ndarray, mask: np.ndarray, value) -> np.ndarray:
    """Replace the tissue under ``mask`` (a fraction in [0, 1]) by ``value``."""
    return img + mask * (value - img)


def _head_coords(p: dict[str, np.ndarray], x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World -> head coordinates: per-subject shift, yaw (about S), pitch (about R) and size."""
    dx, dy, dz = x - p["cx"], y - p["cy"], z - p["cz"]
    cy, sy, cp, sp = np.cos(p["yaw"]), np.sin(p["yaw"]), np.cos(p["pitch"]), np.sin(p["pitch"])
    u = cy * dx + sy * dy
    v0 = cy * dy - sy * dx
    v = cp * v0 + sp * dz
    w = cp * dz - sp * v0
    return u / p["head"], v / p["head"], w / p["head"]


def _tissues(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """T1 intensity of each tissue; at 1.5T the brain's contrasts to white matter shrink by ``contrast``."""
    brain = {"csf": 0.20, "gm": 0.60, "cerebellum": 0.78, "deep_gm": 0.70}
    out = {k: 1.0 - (1.0 - v) * p["contrast"] for k, v in brain.items()}
    fixed = {"scalp": _SCALP, "skull": 0.10, "wm": 1.0, "vitreous": 0.12, "orbital_fat": 0.95}
    out.update({k: np.float32(v) for k, v in fixed.items()})
    return out


def _folding(p: dict[str, np.ndarray], u, v, w) -> np.ndarray:
    """Per-subject folding pattern in [-1, 1] (three plane waves): high in sulci, low in gyri."""
    return sum(np.cos(p[f"k{c}x"] * u + p[f"k{c}y"] * v + p[f"k{c}z"] * w + p[f"phase{c}"]) for c in range(3)) / 3


def _render_anatomy(p: dict[str, np.ndarray], x, y, z, edge: float) -> np.ndarray:
    """Noise-free T1 volume: scalp, skull, CSF, folded cortex, white matter, deep grey, ventricles, eyes."""
    t = _tissues(p)
    u, v, w = _head_coords(p, x, y, z)
    origin = (0.0, 0.0, 0.0)
    img = _inside(u, v, w, origin, _HEAD, edge) * t["scalp"]
    img = _paint(img, _inside(u, v, w, origin, [a * _SKULL_OUTER for a in _HEAD], edge), t["skull"])
    intracranial = _inside(u, v, w, origin, [a * _SKULL_INNER for a in _HEAD], edge)
    img = _paint(img, intracranial, t["csf"])
    img = _cortex(p, img, t, u, v, w, intracranial, edge)
    img = _paint(img, _inside(u, v, w, (0, -0.40, -0.42), (0.36, 0.22, 0.18), edge) * intracranial, t["cerebellum"])
    img = _paint(img, _inside(u, v, w, (0, -0.12, -0.45), (0.10, 0.10, 0.30), edge) * intracranial, t["wm"])
    for side in (-1.0, 1.0):
        img = _paint(img, _inside(u, v, w, (side * 0.07, -0.06, -0.05), (0.06, 0.09, 0.06), edge), t["deep_gm"])
    s = p["ventricle"]
    for side in (-1.0, 1.0):
        centre = (side * (0.06 + 0.015 * s), 0.0, 0.09)
        img = _paint(img, _inside(u, v, w, centre, (0.07 * s, 0.26 * s, 0.085 * s), edge), t["csf"])
    for side in (-1.0, 1.0):
        img = _paint(img, _inside(u, v, w, (side * 0.27, 0.70, -0.30), (0.15, 0.15, 0.13), edge), t["orbital_fat"])
        img = _paint(img, _inside(u, v, w, (side * 0.27, 0.72, -0.30), (0.09, 0.09, 0.09), edge), t["vitreous"])
    return _add_fiducial(p, img, u, v, w, edge)


def _cortex(p: dict[str, np.ndarray], img, t, u, v, w, intracranial, edge: float) -> np.ndarray:
    """Cerebrum: a grey ribbon of thickness ``cortex`` over white matter that reaches up into the gyri,
    cut by CSF-filled sulci where the folding pattern exceeds the subject's threshold."""
    depth = _distance(u, v, w, _BRAIN_CENTRE, [a * p["shrink"] for a in _BRAIN])
    folding = _folding(p, u, v, w)
    img = _paint(img, _ramp(depth.copy(), edge) * intracranial, t["gm"])
    img = _paint(img, _ramp(depth - p["cortex"] * (1 + 0.6 * folding), edge), t["wm"])
    sulci = _ramp(folding - p["sulcus_thr"], 0.15) * _ramp(p["cortex"] - depth, edge)
    return _paint(img, sulci * _ramp(depth + edge, edge) * intracranial, t["csf"])


def _add_fiducial(p: dict[str, np.ndarray], img, u, v, w, edge: float) -> np.ndarray:
    """The site's fiducial capsule: a bright sphere resting on the scalp in the site's direction."""
    norm = np.sqrt(p["fidx"] ** 2 + p["fidy"] ** 2 + p["fidz"] ** 2)
    d = [p["fidx"] / norm, p["fidy"] / norm, p["fidz"] / norm]
    surface = 1 / np.sqrt(sum((d[i] / _HEAD[i]) ** 2 for i in range(3)))
    centre = [di * (surface + p["fid_r"]) for di in d]
    dist = p["fid_r"] - np.sqrt((u - centre[0]) ** 2 + (v - centre[1]) ** 2 + (w - centre[2]) ** 2)
    return _paint(img, _ramp(dist, edge), _SCALP + p["fiducial"])


def _scanner(p: dict[str, np.ndarray], img: np.ndarray, x, y, z, rng: np.random.Generator) -> np.ndarray:
    """Bias field, global gain and Rician noise, quantised to the stored int16 scale."""
    r2 = (x * x + y * y + z * z) / 3
    bias = 1 + p["bias"] * (0.6 * (0.5 - r2) + 0.4 * (p["gx"] * x + p["gy"] * y + p["gz"] * z))
    signal = img * np.clip(bias, 0.5, 1.5) * p["gain"]
    real = signal + p["sigma"] * rng.standard_normal(img.shape, dtype=np.float32)
    imag = p["sigma"] * rng.standard_normal(img.shape, dtype=np.float32)
    return np.rint(np.sqrt(real * real + imag * imag) * _INT16_SCALE).astype(np.int16)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _subject_id(i: int) -> str:
    """The BIDS label: the folder is ``sub-<label>``; the id itself names no folder under the image root."""
    return f"{i + 1:05d}"


def _image_path(i: int) -> str:
    sid = _subject_id(i)
    return f"sub-{sid}/anat/sub-{sid}_T1w.nii.gz"


def site_affine(shape: Sequence[int], spacing: Sequence[float], site: str) -> np.ndarray:
    """Voxel-to-world (RAS mm) affine of a site's stored volumes: origin at the volume centre, spacing on the axes."""
    flips = _SITE_FLIPS[site]
    affine = np.eye(4)
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        sign = -1.0 if axis in flips else 1.0
        affine[axis, axis] = sign * s
        affine[axis, 3] = -sign * s * (n - 1) / 2
    return affine


def _save_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def _write_volumes(
    root: Path,
    params: dict[str, np.ndarray],
    subjects: dict[str, np.ndarray],
    shape: Sequence[int],
    spacing: Sequence[float],
    rng: np.random.Generator,
    bar: tqdm,
) -> None:
    """Render and save every subject's T1w volume, batch by batch, in the site's storage orientation."""
    x, y, z = _grid(shape, spacing)
    half = min(n * s for n, s in zip(shape, spacing)) / 2
    edge = float(np.mean(spacing)) / half / 0.95  # one voxel of partial volume, in head units
    affines = {site: site_affine(shape, spacing, site) for site in SITES}
    n = len(subjects["y"])
    batch = max(1, _BATCH_VOXELS // int(np.prod(shape)))
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        p = {k: v[idx][:, None, None, None] for k, v in params.items()}
        volumes = _scanner(p, _render_anatomy(p, x, y, z, edge), x, y, z, rng)
        for i, volume in zip(idx, volumes):
            site = SITES[int(subjects["site_b"][i])]
            flips = _SITE_FLIPS[site]
            stored = np.ascontiguousarray(np.flip(volume, flips) if flips else volume)
            _save_nifti(root / _image_path(int(i)), stored, affines[site])
        bar.update(len(idx))


def _rows(subjects: dict[str, np.ndarray]) -> list[list[str]]:
    return [
        [
            _subject_id(i),
            _image_path(i),
            str(int(subjects["y"][i])),
            "M" if subjects["male"][i] else "F",
            str(int(subjects["age"][i])),
            SITES[int(subjects["site_b"][i])],
            "3.0" if subjects["field_3t"][i] else "1.5",
        ]
        for i in range(len(subjects["y"]))
    ]


def generate_mri_cohort(
    out_dir: str | os.PathLike,
    num_subjects: int = 1600,
    shape: Sequence[int] = (32, 32, 32),
    spacing: Sequence[float] = (4.0, 4.0, 4.0),
    rho: float = 0.5,
    prevalence: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    *,
    age_gap_fraction: float = 0.03,
    **cue_kwargs: float,
) -> str:
    """Write a synthetic brain-MRI cohort under ``out_dir`` and return the CSV's path.

    Layout: ``out_dir/mri_cohort/participants.csv`` with columns subject_id, image, atrophy (0/1),
    sex (F/M), age (integer years), site (site_a/site_b), field_strength (1.5/3.0), and one volume per
    subject at ``out_dir/mri_cohort/sub-NNNNN/anat/sub-NNNNN_T1w.nii.gz`` (int16, ``shape`` voxels of
    ``spacing`` mm, origin at the volume centre). site_a stores RAS, site_b LPS (x and y reversed, with
    the matching affine), so the bundle must reorient (``Orientationd(axcodes="RAS")``).

    Factors with their cue, each equal to the target with probability ``rho``: field strength
    (3.0 = 1; 1.5T is noisier, flatter in contrast, less bias), site (site_b = 1; the fiducial's place)
    and sex (M = 1; bigger head). Age: <= 50 or >= 60 at random, ``age_gap_fraction`` in 51-59.

    ``cue_kwargs`` set the cue strengths, see :class:`MriCueConfig`. The same arguments give identical
    volumes. The CSV is written last, through a temporary name, so its existence marks a complete
    cohort; an existing CSV is removed first. ``synthetic_cohort.json`` next to it records the arguments.
    """
    shape, spacing = _check_args(num_subjects, shape, spacing, rho, prevalence, age_gap_fraction)
    cues = MriCueConfig.from_kwargs(**cue_kwargs)
    root = Path(out_dir) / COHORT_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / CSV_NAME
    csv_path.unlink(missing_ok=True)

    label_rng, anatomy_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    subjects = draw_subjects(label_rng, num_subjects, rho, prevalence, age_gap_fraction)
    params = _anatomy_params(anatomy_rng, subjects, cues)
    with tqdm(total=num_subjects, desc="synthetic MRI", unit="vol", disable=not progress) as bar:
        _write_volumes(root, params, subjects, shape, spacing, noise_rng, bar)

    settings = {
        "generator": "mimmx.data.synthetic_mri.generate_mri_cohort",
        "num_subjects": num_subjects,
        "shape": list(shape),
        "spacing": list(spacing),
        "rho": rho,
        "prevalence": prevalence,
        "age_gap_fraction": age_gap_fraction,
        "seed": seed,
        "cues": asdict(cues),
    }
    atomic_write_json(root / "synthetic_cohort.json", settings)
    atomic_write_csv(csv_path, COLUMNS, _rows(subjects))
    return str(csv_path)


def _check_args(n, shape, spacing, rho, prevalence, age_gap_fraction) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Reject arguments that would silently give an empty or degenerate cohort."""
    if int(n) != n or n < 1:
        raise ValueError(f"num_subjects must be a positive integer, got {n!r}")
    shape, spacing = tuple(shape), tuple(spacing)
    if len(shape) != 3 or any(int(s) != s or s < 8 for s in shape):
        raise ValueError(f"shape must be three integers >= 8, got {shape!r}")
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing!r}")
    for name, value in (("rho", rho), ("prevalence", prevalence), ("age_gap_fraction", age_gap_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return tuple(int(s) for s in shape), tuple(float(s) for s in spacing)
