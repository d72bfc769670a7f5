"""Figures computed at report time, not read from results: LiftDownPool's sub-bands of a natural
image (the LiftPool paper's Figures 1 and 3) and down-then-up-pooling reconstructions
(its Figure 6). Deterministic: seeded weights, CPU, float64.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..registry import get_pool
from ..suites.segmentation.reconstruction import METHODS, load_sample_image, reconstruction_psnr
from . import plots

BAND_IMAGE = "camera"           # skimage.data.camera(): 512 x 512 grayscale
RECONSTRUCTION_IMAGE = "astronaut"
RECONSTRUCTION_CROP = (slice(64, 192), slice(144, 272))   # the face, 128 x 128, shown enlarged
SEED = 0


def _load(name: str, gray: bool) -> np.ndarray:
    return load_sample_image(name, gray=gray)


def lift_bands(image: np.ndarray, mode: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """{LL, LH, HL, HH} of one LiftDownPool-2D on a grayscale image (H, W) in [0, 1].

    ``mode``: "random" (the learned P/U branches, untrained, weights drawn from ``seed``),
    "zero" (those branches with every weight zeroed: P = U = 0, so d = x_odd and s = x_even:
    the four bands are the four polyphase subsamples, the lazy wavelet) or "haar"
    (P(x) = x, U(d) = d / 2: d = x_odd - x_even, s = their mean, the unnormalised Haar wavelet).
    """
    options = {"bands": "LL"}
    if mode == "haar":
        options.update(predictor=lambda t: t, updater=lambda d: d / 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pool = get_pool("lift", 1, **options)
    pool = pool.double().eval()
    if mode == "zero":
        with torch.no_grad():
            for p in pool.parameters():
                p.zero_()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))[None, None]
    with torch.no_grad():
        y, state = pool.down(x)
    bands = {"LL": y}
    bands.update(state.details)
    return {k: bands[k][0, 0].numpy() for k in ("LL", "LH", "HL", "HH")}


def _band_kwargs(band: np.ndarray) -> dict:
    """Grey levels spanning the band's 0.5th..99.5th percentiles (robust to a few outliers)."""
    lo, hi = (float(v) for v in np.percentile(band, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    return {"cmap": "gray", "vmin": lo, "vmax": hi}


def band_figure(path: Path, seed: int = SEED) -> Path:
    image = _load(BAND_IMAGE, gray=True)
    labels = {"random": f"learned P/U branches,\nuntrained (seed {seed})",
              "zero": "P = U = 0 (zeroed\nweights): lazy wavelet",
              "haar": "P(x) = x, U(d) = d/2:\nHaar wavelet"}
    computed = {mode: lift_bands(image, mode, seed) for mode in ("random", "zero", "haar")}
    gap = float(np.mean([np.abs(computed["random"][b] - computed["zero"][b]).mean()
                         for b in ("LH", "HL", "HH")]))
    rows = []
    for mode, bands in computed.items():
        panels = [(name, bands[name], _band_kwargs(bands[name])) for name in ("LL", "LH", "HL", "HH")]
        rows.append((labels[mode], panels))
    return plots.bands_grid(
        ("input", image, {"cmap": "gray", "vmin": 0, "vmax": 1}), rows, path,
        title=f"LiftDownPool sub-bands of skimage.data.{BAND_IMAGE}() "
              f"({image.shape[0]}x{image.shape[1]} -> {image.shape[0] // 2}x{image.shape[1] // 2})",
        caption="Each band on its own grey range (0.5th to 99.5th percentile). The weights are NOT trained: "
                "untrained P/U outputs are small\n(the details differ from those of P = U = 0 by "
                f"{gap:.3f} on average, image in [0, 1]), so they stay close to the odd samples;\n"
                "training's c_p loss drives the details toward 0, as Haar's fixed prediction does.")


def reconstruction_panels(seed: int = SEED) -> list[tuple[str, np.ndarray, float | None]]:
    """[(method title, reconstruction crop, PSNR over the whole image)], original first."""
    image = _load(RECONSTRUCTION_IMAGE, gray=False)
    wanted = [("max_unpool", "MaxUnpool"), ("max_unpool_blur", "MaxUnpool + blur"),
              ("lift", "LiftUpPool"), ("bilinear", "max + bilinear")]
    out = [("original", image[RECONSTRUCTION_CROP], None)]
    for method, title in wanted:
        if method not in METHODS:
            continue
        value, rec = reconstruction_psnr(image, method, levels=1, dtype="float64", seed=seed)
        out.append((title, rec[RECONSTRUCTION_CROP], value))
    return out


def reconstruction_figure(path: Path, seed: int = SEED) -> tuple[Path, list[tuple[str, float]]]:
    panels = reconstruction_panels(seed)
    shown = []
    psnrs = []
    for title, crop, value in panels:
        label = title if value is None else f"{title}\nPSNR {_psnr_text(value)}"
        shown.append((label, np.clip(crop, 0.0, 1.0), {}))
        if value is not None:
            psnrs.append((title, value))
    fig = plots.image_grid(
        [("", shown)], path, cell=2.4,
        title=f"Down-pool then up-pool (one 2x level), skimage.data.{RECONSTRUCTION_IMAGE}(), "
              "face crop enlarged",
        caption=f"No training: LiftPool P/U random (seed {seed}). PSNR over the whole image, float64; "
                "shown clipped to [0, 1]. MaxUnpool leaves 3 holes per 2x2 window; the blur after it\n"
                "spreads each kept pixel over four without gain (hence darker); LiftUpPool inverts "
                "LiftDownPool exactly.")
    return fig, psnrs


def _psnr_text(value: float) -> str:
    return "inf (exact)" if not np.isfinite(value) else (
        f"{value:.0f} dB (exact)" if value > 100 else f"{value:.2f} dB")
