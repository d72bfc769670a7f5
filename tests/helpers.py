"""Helpers shared by test modules in several folders (a plain module, not a test module: test
modules import from here, never from each other). ``pythonpath = ["tests"]`` in pyproject's
pytest options puts it on the path.

- test images for the engine equivalence tests: scikit-image's photographs resized, a generated
  pattern, and PSNR; smooth generated images for the corruption and perturbation tests
  (distortions/);
- the checks every generator of built-in data passes: seeded, one-line errors
  (data/test_data_photos.py, data/test_data_synthetic.py);
- LiftPool's option grid and its test ids (pools/test_lift_fast.py, pools/test_lift_native.py);
- small data sets written in the real on-disk formats: CIFAR pickles and class-per-folder trees
  (data/test_data_datasets.py, test_faults.py).
"""
import io
import pickle
import struct

import numpy as np
import pytest
import skimage.data
from PIL import Image

from poolbench.errors import UsageError


# ------------------------------------------------------------------------------------------
# test images
# ------------------------------------------------------------------------------------------
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


def smooth_images(n, size, seed, channels, *, high, gain, jitter):
    """Smooth images with some structure (not pure noise), uint8 (n, size, size, 3): per image
    the three maps ``channels(a, b, xx, yy)`` (frequencies a, b from U(2, high), coordinates in
    [0, 1)), from [-1, 1] to [0, 2 * gain], plus U(0, jitter) per channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        a, b = rng.uniform(2, high, 2)
        img = np.stack(channels(a, b, xx, yy), -1)
        out.append((img + 1) * gain + rng.uniform(0, jitter, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# generators of built-in data
# ------------------------------------------------------------------------------------------
BAD_GENERATOR_ARGUMENTS = [dict(n=-1), dict(n=5, seed=-3), dict(n=5, split="val"), dict(n=5, seed=1.5)]


def seeded_pair(generate, n=300):
    """``generate(n, seed=3)`` twice: the same images and labels; with seed 4: other images.
    Returns the (images, labels) of seed 3 and of seed 4."""
    a_x, a_y = generate(n, seed=3)
    b_x, b_y = generate(n, seed=3)
    c_x, c_y = generate(n, seed=4)
    assert np.array_equal(a_x, b_x) and np.array_equal(a_y, b_y)
    assert not np.array_equal(a_x, c_x)
    return (a_x, a_y), (c_x, c_y)


def refused_in_one_line(generate, kwargs):
    """``generate(n, **rest)`` of one of BAD_GENERATOR_ARGUMENTS fails with a one-line UsageError."""
    rest = {k: v for k, v in kwargs.items() if k != "n"}
    with pytest.raises(UsageError) as err:
        generate(kwargs["n"], **rest)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------
# LiftPool options: the fast path's grid (the native kernel's grid is derived from it)
# ------------------------------------------------------------------------------------------
OPTION_GRID = [
    dict(),
    dict(kernel_size=3),
    dict(kernel_size=7, padding_mode="replicate"),
    dict(kernel_size=2, padding_mode="circular"),
    dict(kernel_size=4, padding_mode="zeros"),
    dict(kernel_size=1),
    dict(g1=1),
    dict(g1=2, g2=2),
    dict(g2=1, bias=True),
    dict(bias=True),
    dict(bands="LL"),
    dict(bands="HL+HH"),
    dict(bands="concat"),
    dict(loss="l2"),
    dict(loss_on="first"),
    dict(odd="pad"),
    dict(lambda_u=0.0, lambda_p=2.0),
]


def option_ids(o):
    """A parametrize id for one option dict: 'k=v,...' or 'default'."""
    return ",".join(f"{k}={v}" for k, v in o.items()) or "default"


# ------------------------------------------------------------------------------------------
# CIFAR: the python-version pickles (bytes keys, uint8 (N, 3072) rows R..G..B planes)
# ------------------------------------------------------------------------------------------
class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official files: protocol 2, every str as a
    byte string (so keys load as b'data' with encoding='bytes'), numpy.core module names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin1")
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def dump_pickle(path, obj, py3=False):
    """obj pickled as the official files are (Python 2's protocol 2), or as Python 3 would."""
    if py3:
        path.write_bytes(pickle.dumps(obj, protocol=4))
        return
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue().replace(b"numpy._core.", b"numpy.core."))


def _batch(rng, n, label_key, num_classes, extra=None):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, n)]
    entry = {b"batch_label": b"training batch", b"data": data, label_key: labels,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    entry.update(extra or {})
    return entry


def write_cifar10(root, n=6, seed=0, py3=False):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        written[name] = _batch(rng, n, b"labels", 10)
        dump_pickle(folder / name, written[name], py3)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump_pickle(folder / "batches.meta", {b"num_cases_per_batch": n, b"label_names": names,
                                          b"num_vis": 3072}, py3)
    return folder, written


def write_cifar100(root, n=8, seed=0, py3=False):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for name in ("train", "test"):
        coarse = {b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)]}
        written[name] = _batch(rng, n, b"fine_labels", 100, coarse)
        dump_pickle(folder / name, written[name], py3)
    dump_pickle(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                  b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, py3)
    return folder, written


# ------------------------------------------------------------------------------------------
# class-per-folder trees
# ------------------------------------------------------------------------------------------
def write_image(path, rng, size=(40, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)


def write_tree(root, classes=("cat", "dog", "emu"), per_class=5, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(per_class):
            ext = "png" if i % 2 == 0 else "JPEG"
            write_image(root / c / f"{c}_{i}.{ext}", rng, mode="L" if i == 1 else "RGB")


class Interrupt(Exception):
    """Raised inside a training to stand for a crash."""


def interrupted_then_resumed(cfg, data, monkeypatch, device: str = "cpu", at: int = 6):
    """Train ``cfg`` through the model cache with a resume checkpoint after every step, crash it
    at its ``at``-th learning-rate lookup, then make the same call again: the resumed result."""
    from poolbench.training import cache, loop
    from poolbench.training.runtime import TrainSettings

    calls, real = [], loop.lr_at

    def interrupting(c, e):
        calls.append(e)
        if len(calls) == at:
            raise Interrupt()
        return real(c, e)

    settings = TrainSettings(checkpoint_minutes=1e-9)
    monkeypatch.setattr(loop, "lr_at", interrupting)
    with pytest.raises(Interrupt):
        cache.get_trained_model(cfg, data, device, progress=False, settings=settings)
    monkeypatch.setattr(loop, "lr_at", real)
    return cache.get_trained_model(cfg, data, device, progress=False, settings=settings)
