"""Test images shared by the engine equivalence tests: scikit-image's photographs resized, a
generated pattern, and PSNR."""
import numpy as np
import skimage.data
from PIL import Image


def photos(size, n=3):
    src = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
           skimage.data.rocket()][:n]
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR)) for p in src])


def pattern(size):
    yy, xx = np.mgrid[:size, :size] / size
    img = np.stack([np.sin(9 * xx + 4 * yy), np.cos(13 * xx * yy), (xx > 0.5) * 1.0], -1)
    return np.clip((img + 1) * 110, 0, 255).astype(np.uint8)[None]


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
