"""Perturbation schedules (ImageNet-P / CIFAR-P style): frames and constants per schedule.

A sequence is frames x_0..x_{n-1} of one image under a growing (or moving) perturbation;
``perturb_sequences`` returns uint8 (N, frames, H, W, 3). Three schedules (``docs/protocols.md``
and the authors' generation scripts ``make_cifar_p.py`` / ``make_tinyimagenet_p.py`` /
``make_imagenet_p.py``), frame i:

| perturbation   | cifar (32x32)                         | imagenet (224x224)                    |
|----------------|---------------------------------------|---------------------------------------|
| gaussian_noise | 31: x0 clean, x + N(0, 0.02)          | 31: x0 clean, x + N(0, 0.03)          |
| shot_noise     | 31: x0 clean, poisson(700 x) / 700    | 31: x0 clean, poisson(300 x) / 300    |
| speckle_noise  | 31: x0 clean, x + x N(0, 0.05)        | same                                  |
| brightness     | 31: HSV V += (i-15) * 0.015           | 31: V += (i-15) * 0.02                |
| translate      | 16: i-7 px right, zero fill           | 41: i-20 px                           |
| rotate         | 31: i-15 degrees, bilinear            | same                                  |
| tilt           | 31: 0.75 (i-15) degrees perspective   | 31: i-15 degrees                      |
| scale          | 31: (2i + 70) / 100                   | 31: (2.5i + 40) / 100                 |
| zoom_blur      | 31: mean of zooms 1 + 0.004k, k <= i  | same                                  |
| motion_blur    | 21: radius 6, sigma 1.8, (i-20)*9 deg | 31: radius 10, sigma 3, (i-30)*4 deg  |
| gaussian_blur  | 31: sigma 0.3 + 0.015i (truncate 7)   | 31: sigma 0.25 + 0.035i (truncate 6)  |
| shear          | 31: i-15 degrees                      | same                                  |
| snow           | 31: a snow layer (zoom 2) motion-     | zoom 3, radius 14, sigma 4            |
|                |     blurred radius 10, sigma 2 at     |                                       |
|                |     angle 4i - 150                    |                                       |
| spatter        | 31: a liquid layer that drips down    | loc 0.65, sigma 3.7, threshold 0.69,  |
|                |     (loc 0.6, sigma 1.75, threshold   | drip kernel (.05, .1, .15, .7)        |
|                |     0.7, drip kernel (0.2, 0.8))      |                                       |

``tinyimagenet`` (64x64, ``make_tinyimagenet_p.py``): 31 frames each; gaussian_noise 0.025,
shot_noise 500, speckle 0.05, brightness (i-15) * 0.02, translate i-15 px, rotate, tilt and
shear i-15 degrees, scale (2.5i + 40) / 100, zoom_blur 1 + 0.004k, motion_blur radius 14,
sigma 3 at (i-30)*5 degrees, gaussian_blur sigma 0.35 + 0.014i (truncate 7), snow scale 0.28,
zoom 2, radius 10, sigma 2.5, spatter as cifar but scale 0.25.

The spec lists only the translate, brightness, scale and noise-sigma differences for 224x224;
the authors' ImageNet-P script also differs in shot noise (300), motion blur, tilt, Gaussian
blur, snow and spatter, as in the table. ``schedule="auto"`` picks the schedule whose native
size is nearest to the images' shorter side (``poolbench.distortions.corruption_params.params_for_size``:
cifar up to 45 px, tinyimagenet up to 119 px, imagenet above), the same rule as the
corruption parameter sets.

This is our own code, not the authors': geometric frames use OpenCV warps about the image
centre with bilinear sampling and zero fill (frames with a zero parameter are the original
image exactly); motion blur is a one-sided Gaussian line kernel (ImageMagick's motion blur,
as re-implemented by ``imagecorruptions``) with edge replication; the snow and spatter layers
follow the authors' recipe. Differences from the official files: the ImageNet-P frames were
made from the Resize(256) image and centre-cropped, so content moved in from outside the crop,
while here the border fills with zeros; frames are rounded to uint8 (the authors truncated);
the official sets were stored as MP4 video (ImageNet-P), this never is. Every image's
randomness comes from ``SeedSequence([seed, perturbation, schedule, index])``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from ..metrics import ALL_PERTURBATIONS
from . import cache as _cache
from .corruption_params import params_for_size

SCHEDULES = ("cifar", "tinyimagenet", "imagenet")
GENERATOR_REVISION = 1  # bump when a change here or in perturb_ops changes the bytes
SCHEDULE_LEVEL = {"cifar": 0, "imagenet": 1, "tinyimagenet": 2}
MIN_SIZE = 8

# Per schedule: frames and the constants of each perturbation.
PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "cifar": {
        "gaussian_noise": {"frames": 31, "sigma": 0.02},
        "shot_noise": {"frames": 31, "rate": 700.0},
        "speckle_noise": {"frames": 31, "sigma": 0.05},
        "brightness": {"frames": 31, "step": 0.015, "center": 15},
        "translate": {"frames": 16, "center": 7},
        "rotate": {"frames": 31, "step": 1.0, "center": 15},
        "tilt": {"frames": 31, "step": 0.75, "center": 15},
        "scale": {"frames": 31, "a": 2.0, "b": 70.0},
        "zoom_blur": {"frames": 31, "step": 0.004},
        "motion_blur": {"frames": 21, "radius": 6, "sigma": 1.8, "step": 9.0, "center": 20},
        "gaussian_blur": {"frames": 31, "sigma0": 0.3, "step": 0.015, "truncate": 7.0},
        "shear": {"frames": 31, "step": 1.0, "center": 15},
        "snow": {"frames": 31, "loc": 0.05, "scale": 0.3, "zoom": 2.0, "threshold": 0.5,
                 "radius": 10, "sigma": 2.0, "mix": 0.85},
        "spatter": {"frames": 31, "loc": 0.6, "scale": 0.265, "blur": 1.75, "threshold": 0.7,
                    "drip": (0.2, 0.8), "strength": 0.6},
    },
    "tinyimagenet": {
        "gaussian_noise": {"frames": 31, "sigma": 0.025},
        "shot_noise": {"frames": 31, "rate": 500.0},
        "speckle_noise": {"frames": 31, "sigma": 0.05},
        "brightness": {"frames": 31, "step": 0.02, "center": 15},
        "translate": {"frames": 31, "center": 15},
        "rotate": {"frames": 31, "step": 1.0, "center": 15},
        "tilt": {"frames": 31, "step": 1.0, "center": 15},
        "scale": {"frames": 31, "a": 2.5, "b": 40.0},
        "zoom_blur": {"frames": 31, "step": 0.004},
        "motion_blur": {"frames": 31, "radius": 14, "sigma": 3.0, "step": 5.0, "center": 30},
        "gaussian_blur": {"frames": 31, "sigma0": 0.35, "step": 0.014, "truncate": 7.0},
        "shear": {"frames": 31, "step": 1.0, "center": 15},
        "snow": {"frames": 31, "loc": 0.05, "scale": 0.28, "zoom": 2.0, "threshold": 0.5,
                 "radius": 10, "sigma": 2.5, "mix": 0.85},
        "spatter": {"frames": 31, "loc": 0.6, "scale": 0.25, "blur": 1.75, "threshold": 0.7,
                    "drip": (0.2, 0.8), "strength": 0.6},
    },
    "imagenet": {
        "gaussian_noise": {"frames": 31, "sigma": 0.03},
        "shot_noise": {"frames": 31, "rate": 300.0},
        "speckle_noise": {"frames": 31, "sigma": 0.05},
        "brightness": {"frames": 31, "step": 0.02, "center": 15},
        "translate": {"frames": 41, "center": 20},
        "rotate": {"frames": 31, "step": 1.0, "center": 15},
        "tilt": {"frames": 31, "step": 1.0, "center": 15},
        "scale": {"frames": 31, "a": 2.5, "b": 40.0},
        "zoom_blur": {"frames": 31, "step": 0.004},
        "motion_blur": {"frames": 31, "radius": 10, "sigma": 3.0, "step": 4.0, "center": 30},
        "gaussian_blur": {"frames": 31, "sigma0": 0.25, "step": 0.035, "truncate": 6.0},
        "shear": {"frames": 31, "step": 1.0, "center": 15},
        "snow": {"frames": 31, "loc": 0.05, "scale": 0.3, "zoom": 3.0, "threshold": 0.5,
                 "radius": 14, "sigma": 4.0, "mix": 0.85},
        "spatter": {"frames": 31, "loc": 0.65, "scale": 0.27, "blur": 3.7, "threshold": 0.69,
                    "drip": (0.05, 0.1, 0.15, 0.7), "strength": 0.6},
    },
}


# --------------------------------------------------------------------------- names and schedules

def check_perturbation(name: str) -> str:
    return _cache.check_name(name, ALL_PERTURBATIONS, "perturbation")


def resolve_schedule(schedule: str, image_shape: Sequence[int] | None = None) -> str:
    """'cifar', 'tinyimagenet' or 'imagenet'; 'auto' picks the one nearest the image size."""
    if schedule == "auto":
        if image_shape is None:
            raise UsageError("schedule='auto' needs the image size; pass schedule='cifar', "
                             "'tinyimagenet' or 'imagenet'")
        return params_for_size(image_shape[0], image_shape[1])
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule '{schedule}'; use 'cifar', 'tinyimagenet', 'imagenet' or 'auto'")
    return schedule


def frame_count(perturbation: str, schedule: str = "cifar") -> int:
    """Number of frames per sequence."""
    return int(PARAMS[resolve_schedule(schedule)][check_perturbation(perturbation)]["frames"])


def frame_parameters(perturbation: str, schedule: str = "cifar") -> list[float]:
    """The schedule's parameter at each frame (pixels, degrees, factors, sigmas, brightness
    offsets; noise sigma or rate for frames 1.., 0 for the clean frame 0; the zoom of the newest
    layer for zoom_blur; the snow angle; the number of drip steps for spatter)."""
    p = check_perturbation(perturbation)
    q = PARAMS[resolve_schedule(schedule)][p]
    i = np.arange(q["frames"], dtype=np.float64)
    if p in ("gaussian_noise", "speckle_noise"):
        v = np.where(i == 0, 0.0, q["sigma"])
    elif p == "shot_noise":
        v = np.where(i == 0, 0.0, q["rate"])
    elif p == "brightness":
        v = (i - q["center"]) * q["step"]
    elif p == "translate":
        v = i - q["center"]
    elif p in ("rotate", "tilt", "shear", "motion_blur"):
        v = (i - q["center"]) * q["step"]
    elif p == "scale":
        v = (q["a"] * i + q["b"]) / 100.0
    elif p == "zoom_blur":
        v = 1.0 + q["step"] * i
    elif p == "gaussian_blur":
        v = q["sigma0"] + q["step"] * i
    elif p == "snow":
        v = 4.0 * i - 150.0
    else:  # spatter
        v = i
    return [float(round(x, 10)) for x in v]
