"""Synthetic chest-radiograph cohort in CheXpert's own on-disk format (the CXR bundle's default data).

The cohort is written as real 8-bit PNG files plus a ``train.csv`` with CheXpert's exact columns,
so it enters the pipeline through the same reader as the real data set (no in-memory shortcut).
Each patient has a causal target (pleural effusion) and three spurious factors that leave an
image cue (sex, age group, support devices). Each factor agrees with the target with probability
``rho`` independently, so ``rho=0.5`` gives a cohort balanced over all buckets; the bundle imposes
its training correlation later by subsampling buckets.

Pictures are drawn analytically in normalised patient coordinates (thorax roughly spans
``u, v`` in [-1, 1]) that are jittered per patient by a cheap affine map, and rendered in
batches with numpy, so 6000 patients at 64x64 take a few seconds and any ``image_size`` looks
alike. The target is deliberately subtler than the spurious cues, as in real radiographs:
moderate contrast, variable extent, inside the lung bases where ribs and noise also vary.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from mimmx.data.cues import FromKwargs
from mimmx.io_utils import atomic_path, atomic_write_json

__all__ = [
    "CHEXPERT_COLUMNS",
    "OBSERVATION_COLUMNS",
    "TARGET_COLUMN",
    "RELEASE_FOLDER",
    "CueConfig",
    "generate_cxr_cohort",
]

RELEASE_FOLDER = "CheXpert-v1.0-small"
TARGET_COLUMN = "Pleural Effusion"
OBSERVATION_COLUMNS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA") + OBSERVATION_COLUMNS
_OTHER_OBSERVATIONS = tuple(c for c in OBSERVATION_COLUMNS if c not in ("No Finding", TARGET_COLUMN, "Support Devices"))

# Pixels per rendered batch: bounds the float32 temporaries to a few hundred MB at any image size.
_BATCH_PIXELS = 1 << 20


@dataclass(frozen=True)
class CueConfig(FromKwargs):
    """Strengths of the image cues, on the [0, 1] intensity scale of the rendered film.

    The defaults are calibrated with ``scripts/check_cue_difficulty.py`` so that a small CNN learns
    each spurious cue within one epoch while the effusion needs several, as in real radiographs
    (2000 training images at 64x64, validation AUC after epoch 1: effusion 0.83-0.85, sex, age
    and devices >= 0.99; after epoch 10: effusion 0.97).

    Attributes:
        effusion_contrast: opacity added by the pleural fluid at its densest (full lung darkness is
            about 0.30, so 0.30 would make the fluid as dense as soft tissue). Scaled per patient by
            a random factor in [0.75, 1.25].
        effusion_min_height / effusion_max_height: range (drawn uniformly per affected side) of the
            height of the fluid's medial border above the top of the diaphragm dome, in patient units
            (a lung is about 1.4 tall); the meniscus rises further towards the lateral chest wall.
            The minimum matters most for difficulty: below about 0.1 the smallest effusions are
            hardly visible at 64x64 and no small CNN gets past AUC ~0.93.
        sex_contrast: brightness of the breast soft-tissue shadows over the lower lung fields
            (Female only).
        sex_shape: relative difference of thorax and shoulder width between Male and Female
            (Male broader by this fraction).
        age_contrast: loss of bone density for the old group: ribs, clavicles and spine of an old
            patient are ``1 - age_contrast`` as bright (and thinner) as a young patient's; it also
            lowers the soft-tissue contrast a little.
        device_contrast: brightness of the tubes/catheters and pacemaker leads of Support Devices.
        device_width: half-width of a tube in normalised units (about 1 pixel at 64x64).
        marker_contrast: brightness of the "AP" marker in a top corner of AP films.
        noise_std: standard deviation of the per-pixel film noise.
        gradient: peak amplitude of the smooth random intensity gradient across the film.
        exposure_jitter: half-range of the random global gain (1 +- jitter) and offset (+- jitter / 2).
        anatomy_jitter: scale of the random per-patient anatomy variation (position, size,
            rotation, diaphragm height); 1 is the default variability, 0 none.
    """

    effusion_contrast: float = 0.16
    effusion_min_height: float = 0.10
    effusion_max_height: float = 0.35
    sex_contrast: float = 0.10
    sex_shape: float = 0.10
    age_contrast: float = 0.6
    device_contrast: float = 0.55
    device_width: float = 0.04
    marker_contrast: float = 0.6
    noise_std: float = 0.04
    gradient: float = 0.08
    exposure_jitter: float = 0.10
    anatomy_jitter: float = 1.0


# ----------------------------------------------------------------------------------------------
# Patients: labels, table cells and per-patient anatomy parameters
# ----------------------------------------------------------------------------------------------


def _draw_labels(
    rng: np.random.Generator,
    n: int,
    rho: float,
    prevalence: float,
    lateral_fraction: float,
    uncertain_fraction: float,
    age_gap_fraction: float,
) -> dict[str, np.ndarray]:
    """Target, the three factors (each equal to the target with probability rho) and view flags."""
    y = rng.random(n) < prevalence

    def factor() -> np.ndarray:
        return np.where(rng.random(n) < rho, y, ~y)

    male, old, device = factor(), factor(), factor()
    age = np.where(old, rng.integers(60, 91, n), rng.integers(18, 51, n))
    gap = rng.random(n) < age_gap_fraction
    age = np.where(gap, rng.integers(51, 60, n), age)
    return {
        "y": y,
        "male": male,
        "old": old,
        "age_gap": gap,
        "age": age,
        "device": device,
        "ap": rng.random(n) < 0.5,
        "lateral": rng.random(n) < lateral_fraction,
        "uncertain": rng.random(n) < uncertain_fraction,
    }


def _observation_cells(rng: np.random.Generator, labels: dict[str, np.ndarray]) -> list[dict[str, str]]:
    """CheXpert observation cells per patient: target and devices from the labels, the rest plausible noise."""
    n = len(labels["y"])
    other = {
        c: rng.choice(np.array(["", "1.0", "0.0", "-1.0"]), size=n, p=[0.86, 0.06, 0.05, 0.03])
        for c in _OTHER_OBSERVATIONS
    }
    neg_blank = rng.random(n) < 0.4
    dev_blank = rng.random(n) < 0.5
    cells = []
    for i in range(n):
        row = {c: str(other[c][i]) for c in _OTHER_OBSERVATIONS}
        if labels["uncertain"][i]:
            row[TARGET_COLUMN] = "-1.0"
        elif labels["y"][i]:
            row[TARGET_COLUMN] = "1.0"
        else:
            row[TARGET_COLUMN] = "" if neg_blank[i] else "0.0"
        row["Support Devices"] = "1.0" if labels["device"][i] else ("" if dev_blank[i] else "0.0")
        findings = [row[c] for c in _OTHER_OBSERVATIONS] + [row[TARGET_COLUMN]]
        row["No Finding"] = "" if any(v in ("1.0", "-1.0") for v in findings) else "1.0"
        cells.append(row)
    return cells


def _anatomy_params(rng: np.random.Generator, labels: dict[str, np.ndarray], cues: CueConfig) -> dict[str, np.ndarray]:
    """Per-patient float parameters of the picture (jitter, cue placement and strength)."""
    n = len(labels["y"])
    j = cues.anatomy_jitter
    male = labels["male"].astype(np.float32)
    old = labels["old"].astype(np.float32)

    def u(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, n)

    def nrm(std: float) -> np.ndarray:
        return rng.normal(0.0, std * j, n)

    width = 0.74 * (1 + cues.sex_shape * (male - 0.5)) * (1 + nrm(0.03))
    angle = nrm(0.035)
    # Bone density: old patients are dimmer; the 51-59 gap sits halfway.
    density = np.where(labels["old"], 1 - cues.age_contrast, 1.0)
    density = np.where(labels["age_gap"], 1 - cues.age_contrast / 2, density) * u(0.9, 1.1)
    side = rng.integers(0, 3, n)  # 0 right, 1 left, 2 both (image left = patient's right)
    y = labels["y"].astype(np.float32)
    h_lo, h_hi = cues.effusion_min_height, cues.effusion_max_height
    dev_kind = rng.integers(0, 3, n)  # 0 jugular catheter, 1 nasogastric tube, 2 pacemaker and lead
    dev_side = rng.choice([-1.0, 1.0], n)
    p = {
        "cx": nrm(0.03),
        "cy": 0.06 + nrm(0.03),
        "width": width,
        "height": 0.88 * (1 + nrm(0.03)),
        "cos": np.cos(angle),
        "sin": np.sin(angle),
        "shoulder": 1.18 * (1 + 0.6 * cues.sex_shape * (male - 0.5)) * (1 + nrm(0.03)),
        "dome_r": 0.47 + nrm(0.035),
        "dome_l": 0.51 + nrm(0.035),
        "dome_h": 0.16 + nrm(0.025),
        "heart_u": 0.14 + nrm(0.025),
        "heart_s": 1 + nrm(0.06),
        "rib_phase": u(0, 1),
        "rib_curve": 0.42 + nrm(0.04),
        "density": density,
        "rib_thr": 0.2 + 0.35 * old * min(cues.age_contrast / 0.6, 1.0) + u(-0.05, 0.05),
        "tissue": 1 - 0.15 * cues.age_contrast * old + nrm(0.03),
        "eff_r": y * (side != 1),
        "eff_l": y * (side != 0),
        "eff_hr": u(h_lo, h_hi),
        "eff_hl": u(h_lo, h_hi),
        "eff_c": cues.effusion_contrast * u(0.75, 1.25),
        "breast": (1 - male) * cues.sex_contrast * u(0.8, 1.2),
        "breast_r": 0.40 * (1 + nrm(0.08)),
        "breast_v": 0.30 + nrm(0.04),
        "device": labels["device"].astype(np.float32) * cues.device_contrast * u(0.85, 1.15),
        "pacer": (dev_kind == 2).astype(np.float32),
        "gain": 1 + u(-cues.exposure_jitter, cues.exposure_jitter),
        "offset": u(-cues.exposure_jitter / 2, cues.exposure_jitter / 2),
        "gx": u(-cues.gradient, cues.gradient),
        "gy": u(-cues.gradient, cues.gradient),
        "marker": labels["ap"].astype(np.float32) * cues.marker_contrast,
        "marker_x": np.where(rng.random(n) < 0.5, -0.9, 0.66),
    }
    p.update(_device_curves(rng, dev_kind, dev_side))
    return {k: np.asarray(v, dtype=np.float32) for k, v in p.items()}


def _device_curves(rng: np.random.Generator, kind: np.ndarray, side: np.ndarray) -> dict[str, np.ndarray]:
    """Start/end points and bend of each patient's tube, as u(v) curves in patient coordinates."""
    n = len(kind)
    jit = rng.normal(0, 0.04, (5, n))
    # columns: u0, v0, u1, v1, bend for the three device kinds
    table = {
        0: (0.22, -1.4, -0.08, -0.12, 0.12),  # internal jugular catheter into the superior vena cava
        1: (0.0, -1.4, 0.28, 0.85, -0.12),  # nasogastric tube down into the stomach
        2: (0.62, -0.60, 0.18, 0.32, 0.15),  # pacemaker box in the upper chest, lead into the heart
    }
    vals = np.stack([np.array(table[int(k)]) for k in kind], axis=1) if n else np.zeros((5, 0))
    u_sign = np.where(kind == 1, 1.0, side)
    return {
        "dev_u0": vals[0] * u_sign + jit[0],
        "dev_v0": vals[1] + jit[1],
        "dev_u1": vals[2] + jit[2],
        "dev_v1": vals[3] + jit[3],
        "dev_bend": vals[4] * u_sign + jit[4],
    }


# ----------------------------------------------------------------------------------------------
# Rendering (batched: every parameter is a (B, 1, 1) array, every picture a (B, H, W) array)
# ----------------------------------------------------------------------------------------------


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance d (> 0 inside): a linear ramp of the given width."""
    return np.clip(0.5 + d / width, 0.0, 1.0)


def _grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: x as (1, 1, W), y as (1, H, 1) to broadcast."""
    c = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size * 2 - 1
    return c[None, None, :], c[None, :, None]


def _patient_coords(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates -> normalised patient coordinates (per-patient shift, rotation and scale)."""
    dx, dy = x - p["cx"], y - p["cy"]
    u = (p["cos"] * dx + p["sin"] * dy) / p["width"]
    v = (p["cos"] * dy - p["sin"] * dx) / p["height"]
    return u, v


def _ellipse(u: np.ndarray, v: np.ndarray, uc: Any, vc: Any, a: Any, b: Any, edge: float) -> np.ndarray:
    """Soft ellipse mask (cheap: no square root; the edge is in units of the normalised radius)."""
    return _ramp(1 - ((u - uc) / a) ** 2 - ((v - vc) / b) ** 2, edge)


def _curve(u: np.ndarray, v: np.ndarray, u0, v0, u1, v1, bend, width: float) -> np.ndarray:
    """Thin line u = f(v) from (u0, v0) to (u1, v1) bowed by ``bend``: tubes, catheters and leads."""
    t = np.clip((v - v0) / (v1 - v0), 0.0, 1.0)
    line_u = u0 + (u1 - u0) * t + bend * t * (1 - t)
    along = _ramp(v1 - v, 0.03) * _ramp(v - v0, 0.03)
    return np.clip(1 - np.abs(u - line_u) / width, 0.0, 1.0) * along


def _body(p: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Soft-tissue silhouette: chest barrel (widest at the bases), shoulders, neck and upper arms."""
    au = np.abs(u / (0.93 + 0.1 * v))
    vv = ((v - 0.15) / 1.1) ** 2
    chest = _ramp(1 - au * au * au - vv * vv, 0.15)  # products: float powers other than 2 are slow
    shoulders = _ellipse(u, v, 0.0, -0.74, p["shoulder"], 0.24, 0.3)
    neck = _ramp(0.25 - np.abs(u), 0.05) * _ramp(-0.6 - v, 0.1)
    arms = 0.85 * _ellipse(np.abs(u), v, p["shoulder"] - 0.02, 0.0, 0.13, 0.9, 0.3)
    return np.maximum(np.maximum(chest, shoulders), np.maximum(neck, arms))


def _lungs(p: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right and left lung masks (image left / right): narrow apex, wide base, cut below by the dome."""
    masks = []
    a = 0.36 * (1 + 0.22 * v)
    for s, dome in ((-1.0, p["dome_r"]), (1.0, p["dome_l"])):
        ell = _ellipse(u, v, s * 0.45, -0.12, a, 0.72, 0.2)
        du = (u - s * 0.42) / 0.5
        v_dome = dome - p["dome_h"] * np.clip(1 - du * du, 0.0, 1.0)
        masks.append(ell * _ramp(v_dome - v, 0.05))
    return masks[0], masks[1], np.abs(u)


def _bones(p: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray, au: np.ndarray) -> np.ndarray:
    """Ribs (posterior and fainter anterior), clavicles and spine, scaled by bone density."""
    spacing = 0.13
    t = (v + 0.1 * au - p["rib_curve"] * u * u) / spacing - p["rib_phase"]
    thr = p["rib_thr"]
    ribs = np.clip((np.cos(2 * np.pi * t) - thr) / (1 - thr), 0.0, 1.0)
    t2 = (v + 0.22 * u * u) / (spacing * 1.1) + p["rib_phase"] * 0.7
    ribs_ant = np.clip((np.cos(2 * np.pi * t2) - 0.6) / 0.4, 0.0, 1.0)
    region = _ramp(0.97 - au, 0.06) * _ramp(v + 0.78, 0.06) * _ramp(0.52 - v, 0.12) * _ramp(au - 0.1, 0.05)
    w = au - 0.1
    v_clav = -0.66 - 0.22 * w + 0.3 * w * w
    clav = np.clip(1 - np.abs(v - v_clav) / (0.05 * (1.25 - 0.5 * p["rib_thr"])), 0.0, 1.0)
    clav = clav * _ramp(au - 0.08, 0.04) * _ramp(0.8 - au, 0.08)
    spine = _ramp(0.075 - au, 0.03) * (0.75 + 0.25 * np.cos(2 * np.pi * v / 0.115))
    bone = region * (0.13 * ribs + 0.04 * ribs_ant) + 0.22 * clav + 0.12 * spine
    return p["density"] * bone


def _effusion(p: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray, lung_r, lung_l) -> np.ndarray:
    """Pleural fluid: fills the lung base up to a meniscus that rises towards the lateral chest wall."""
    out = 0.0
    for s, dome, on, h, lung in (
        (-1.0, p["dome_r"], p["eff_r"], p["eff_hr"], lung_r),
        (1.0, p["dome_l"], p["eff_l"], p["eff_hl"], lung_l),
    ):
        lateral = np.clip(s * (u - s * 0.42) / 0.4, 0.0, 1.2)
        level = dome - p["dome_h"] - h - (0.5 * h + 0.1) * lateral * lateral
        fluid = np.clip((v - level) / 0.12, 0.0, 1.0)
        out = out + on * fluid * lung
    return p["eff_c"] * out


def _breasts(p: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Breast soft-tissue shadows: dense towards a sharp curved lower border over the lower lung fields."""
    r = p["breast_r"]
    out = 0.0
    for s in (-1.0, 1.0):
        disk = _ramp(1 - ((u - s * 0.55) ** 2 + (v - p["breast_v"]) ** 2) / (r * r), 0.15)
        out = out + disk * np.clip((v - p["breast_v"] + 0.7 * r) / r, 0.0, 1.0)
    return p["breast"] * out


def _devices(p: dict[str, np.ndarray], u: np.ndarray, v: np.ndarray, width: float) -> np.ndarray:
    """Support devices: one tube/catheter/lead per patient plus the pacemaker box where there is one."""
    line = _curve(u, v, p["dev_u0"], p["dev_v0"], p["dev_u1"], p["dev_v1"], p["dev_bend"], width)
    box = _ramp(0.1 - np.abs(u - p["dev_u0"]), 0.03) * _ramp(0.07 - np.abs(v - p["dev_v0"]), 0.03)
    return p["device"] * np.maximum(line, 1.3 * p["pacer"] * box)


def _marker(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A small letter-like block ("AP") in a top corner of AP films, in image (not patient) coordinates."""
    inside = _ramp(0.12 - np.abs(x - p["marker_x"] - 0.12), 0.03) * _ramp(0.06 - np.abs(y + 0.86), 0.03)
    hole = _ramp(0.025 - np.abs(x - p["marker_x"] - 0.12), 0.03) * _ramp(0.03 - np.abs(y + 0.88), 0.03)
    return p["marker"] * inside * (1 - hole)


def _finish(p: dict[str, np.ndarray], img: np.ndarray, x, y, cues: CueConfig, rng: np.random.Generator) -> np.ndarray:
    """Exposure, smooth gradient and film noise, then quantise to uint8."""
    img = img * p["gain"] + p["offset"] + p["gx"] * x + p["gy"] * y
    img += rng.normal(0.0, cues.noise_std, img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _render_frontal(p: dict[str, np.ndarray], x, y, cues: CueConfig, rng: np.random.Generator) -> np.ndarray:
    """PA/AP chest film: soft tissue, lungs, heart and mediastinum, bones, then the cues."""
    u, v = _patient_coords(p, x, y)
    body = _body(p, u, v)
    lung_r, lung_l, au = _lungs(p, u, v)
    heart = _ellipse(u, v, p["heart_u"], 0.22, 0.36 * p["heart_s"], 0.3 * p["heart_s"], 0.35)
    mediastinum = _ramp(0.13 - np.abs(u - 0.02), 0.06) * _ramp(0.45 - v, 0.1)
    mediastinum = np.maximum(mediastinum, _ellipse(u, v, 0.12, -0.42, 0.1, 0.09, 0.4))
    visible = 1 - np.maximum(heart, mediastinum)
    lungs = (lung_r + lung_l) * visible
    vessels = np.clip(1 - (au - 0.15) / 0.6, 0.0, 1.0)
    abdomen = _ramp(v - 0.5, 0.2)
    tissue = p["tissue"]
    above_domes = _ramp(0.4 - v, 0.2)  # the heart's lower half merges into the diaphragm's soft tissue
    img = 0.06 + body * (0.40 + 0.05 * abdomen) + tissue * (0.07 * heart * above_domes + 0.04 * mediastinum)
    img = img - tissue * lungs * (0.30 - 0.08 * vessels)
    img = img + _bones(p, u, v, au)
    img = img + _effusion(p, u, v, lung_r * visible, lung_l * visible)
    img = img + _breasts(p, u, v) * body
    img = img + _devices(p, u, v, cues.device_width)
    img = np.maximum(img, _marker(p, x, y))
    return _finish(p, img, x, y, cues, rng)


def _render_lateral(p: dict[str, np.ndarray], x, y, cues: CueConfig, rng: np.random.Generator) -> np.ndarray:
    """Lateral film: a deep chest with one lung field, spine behind, heart in front, domes below."""
    u, v = _patient_coords(p, x, y)
    body = _ellipse(u, v, 0.0, 0.15, 0.95, 1.25, 0.25) + _ramp(0.45 - np.abs(u + 0.05), 0.1) * _ramp(-0.6 - v, 0.2)
    body = np.clip(body, 0.0, 1.0)
    lung = _ellipse(u, v, -0.05, -0.05, 0.7, 0.7, 0.2) * _ramp(p["dome_l"] - 0.12 * (1 - u * u) - v, 0.05)
    heart = _ellipse(u, v, -0.35, 0.3, 0.35, 0.3, 0.35)
    spine = _ramp(0.12 - np.abs(u - 0.72), 0.04) * (0.7 + 0.3 * np.cos(2 * np.pi * v / 0.14))
    sternum = _ramp(0.04 - np.abs(u + 0.85), 0.03) * _ramp(0.4 - np.abs(v + 0.2), 0.1)
    img = 0.06 + 0.42 * body - 0.28 * lung * (1 - heart) + 0.06 * heart
    img = img + p["density"] * (0.18 * spine + 0.12 * sternum)
    img = img + _devices(p, u, v, cues.device_width)
    return _finish(p, img, x, y, cues, rng)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _patient_path(i: int, lateral: bool, studies: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """CheXpert's layout; with ``studies`` (patient index and study number per record) several studies a patient."""
    name = "view2_lateral.png" if lateral else "view1_frontal.png"
    patient, study = (i, 0) if studies is None else (int(studies[0][i]), int(studies[1][i]))
    return f"{RELEASE_FOLDER}/train/patient{patient + 1:05d}/study{study + 1}/{name}"


def _assign_studies(rng: np.random.Generator, n: int, mean: float) -> tuple[np.ndarray, np.ndarray]:
    """Patient index and study number of each of ``n`` records: study counts per patient geometric with ``mean``
    (CheXpert: most patients have one study, some have dozens)."""
    counts = rng.geometric(1.0 / mean, size=n)
    patient = np.repeat(np.arange(n), counts)[:n]
    first = np.r_[0, np.flatnonzero(np.diff(patient)) + 1]
    study = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
    return patient, study


def _share_patient_traits(labels: dict[str, np.ndarray], patient: np.ndarray) -> None:
    """A patient's later studies keep the sex and age (group) of the first: they are the same person."""
    _, first = np.unique(patient, return_index=True)
    source = first[patient]
    for key in ("male", "old", "age_gap", "age"):
        labels[key] = labels[key][source]


def _rows(
    labels: dict[str, np.ndarray], cells: list[dict[str, str]], studies: tuple[np.ndarray, np.ndarray] | None = None
) -> list[dict[str, str]]:
    """CSV rows in patient order, the lateral view (if any) right after its frontal view."""
    rows = []
    for i, obs in enumerate(cells):
        base = {"Sex": "Male" if labels["male"][i] else "Female", "Age": str(int(labels["age"][i]))}
        views = [(False, "Frontal", "AP" if labels["ap"][i] else "PA")]
        if labels["lateral"][i]:
            views.append((True, "Lateral", ""))
        for lateral, view, projection in views:
            rows.append(
                {
                    "Path": _patient_path(i, lateral, studies),
                    **base,
                    "Frontal/Lateral": view,
                    "AP/PA": projection,
                    **obs,
                }
            )
    return rows


def _write_images(
    root: Path,
    params: dict[str, np.ndarray],
    indices: np.ndarray,
    image_size: int,
    lateral: bool,
    cues: CueConfig,
    rng: np.random.Generator,
    bar: tqdm,
    studies: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Render and save the given patients' frontal (or lateral) films batch by batch."""
    x, y = _grid(image_size)
    render = _render_lateral if lateral else _render_frontal
    batch = max(1, _BATCH_PIXELS // (image_size * image_size))
    for start in range(0, len(indices), batch):
        idx = indices[start : start + batch]
        p = {k: v[idx][:, None, None] for k, v in params.items()}
        images = render(p, x, y, cues, rng)
        for i, img in zip(idx, images):
            path = root / _patient_path(int(i), lateral, studies)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(path, compress_level=1)
        bar.update(len(idx))


def generate_cxr_cohort(
    out_dir: str | os.PathLike,
    num_patients: int = 6000,
    image_size: int = 64,
    rho: float = 0.5,
    prevalence: float = 0.5,
    lateral_fraction: float = 0.03,
    uncertain_fraction: float = 0.02,
    seed: int = 0,
    progress: bool = True,
    *,
    age_gap_fraction: float = 0.01,
    studies_per_patient: float = 1.0,
    **cue_kwargs: float,
) -> str:
    """Write a synthetic CheXpert-format cohort under ``out_dir`` and return the CSV's path.

    Layout: ``out_dir/CheXpert-v1.0-small/train.csv`` and
    ``out_dir/CheXpert-v1.0-small/train/patientNNNNN/study1/view1_frontal.png`` (plus
    ``view2_lateral.png`` for ``lateral_fraction`` of the patients), 8-bit grayscale PNGs of
    ``image_size`` x ``image_size``. Target: "Pleural Effusion" (1.0 positive; 0.0 or blank
    negative; -1.0 for ``uncertain_fraction`` of the patients, whatever their picture shows).
    Factors: Sex (Male = 1), age group (>= 60 = 1, <= 50 = 0; ``age_gap_fraction`` of the patients
    get an age in 51-59, which the age factor's bins drop) and Support Devices (1.0 vs 0.0/blank),
    each equal to the target with probability ``rho``. AP/PA is independent of everything.

    ``num_patients`` frontal studies are written; with ``studies_per_patient`` > 1 they are grouped
    into patients with geometrically distributed study counts of that mean
    (``patientNNNNN/study1, study2, ...``, the later studies sharing the first one's sex and age),
    as in CheXpert, where the split builder must keep each patient in one split.

    ``cue_kwargs`` set the cue strengths, see :class:`CueConfig`. The same arguments give
    byte-identical files. The CSV is written last, through a temporary name, so its existence
    marks a complete cohort; an existing CSV is removed first so a rewrite in place never leaves
    a stale "complete" marker over half-written images. A ``synthetic_cohort.json`` next to the
    CSV records the generation arguments.
    """
    _check_args(
        num_patients,
        image_size,
        rho,
        prevalence,
        lateral_fraction,
        uncertain_fraction,
        age_gap_fraction,
        studies=studies_per_patient,
    )
    cues = CueConfig.from_kwargs(**cue_kwargs)
    root = Path(out_dir)
    release = root / RELEASE_FOLDER
    release.mkdir(parents=True, exist_ok=True)
    csv_path = release / "train.csv"
    if csv_path.exists():
        csv_path.unlink()

    label_rng, cell_rng, anatomy_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    labels = _draw_labels(
        label_rng, num_patients, rho, prevalence, lateral_fraction, uncertain_fraction, age_gap_fraction
    )
    studies = None
    if studies_per_patient != 1.0:
        studies = _assign_studies(
            np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[4]), num_patients, studies_per_patient
        )
        _share_patient_traits(labels, studies[0])
    cells = _observation_cells(cell_rng, labels)
    params = _anatomy_params(anatomy_rng, labels, cues)

    frontal = np.arange(num_patients)
    lateral = np.flatnonzero(labels["lateral"])
    with tqdm(total=len(frontal) + len(lateral), desc="synthetic CXR", unit="img", disable=not progress) as bar:
        _write_images(root, params, frontal, image_size, False, cues, noise_rng, bar, studies)
        _write_images(root, params, lateral, image_size, True, cues, noise_rng, bar, studies)

    settings = {
        "generator": "mimmx.data.synthetic_cxr.generate_cxr_cohort",
        "num_patients": num_patients,
        "image_size": image_size,
        "rho": rho,
        "prevalence": prevalence,
        "lateral_fraction": lateral_fraction,
        "uncertain_fraction": uncertain_fraction,
        "age_gap_fraction": age_gap_fraction,
        "studies_per_patient": studies_per_patient,
        "seed": seed,
        "cues": asdict(cues),
    }
    atomic_write_json(release / "synthetic_cohort.json", settings)
    rows = _rows(labels, cells, studies)

    with atomic_path(csv_path) as tmp, open(tmp, "x", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CHEXPERT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return str(csv_path)


def _check_args(n: int, size: int, rho: float, prevalence: float, *fractions: float, studies: float = 1.0) -> None:
    """Reject arguments that would silently give an empty or degenerate cohort."""
    if not studies >= 1.0:
        raise ValueError(f"studies_per_patient must be >= 1 (the mean study count of a patient), got {studies!r}")
    if int(n) != n or n < 1:
        raise ValueError(f"num_patients must be a positive integer, got {n!r}")
    if int(size) != size or size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {size!r}")
    for name, value in (("rho", rho), ("prevalence", prevalence)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    for value in fractions:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fractions (lateral, uncertain, age gap) must be in [0, 1], got {value!r}")
