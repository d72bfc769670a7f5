"""Corruption engines side by side: ``poolbench bench corrupt [--threads N]
[--sizes 32,224] [--images N] [--severity S] [--device cpu|cuda[:N]] [--json PATH]``.

Images per second per corruption, the reference engine (imagecorruptions at ImageNet
parameters, the project's numpy generator at the small sets) against the torch engine, on the
SAME images (scikit-image's photographs resized), at the parameter set that ``auto`` picks for
each size, one severity, with the thread count set explicitly for torch and OpenCV alike (numpy
and scipy run single-threaded here). Each engine's first call is run once untimed (glass blur's
numba compile, torch's kernel warm-up). Overall: the time for the whole set of 19 corruptions,
reference / torch, as ``--corruption-engine auto`` makes it (glass blur and spatter by the
reference) and with every corruption the torch engine implements. Not a timed test: run it by
hand, once.
"""
from __future__ import annotations

import json
import time

import click
import cv2
import numpy as np
import skimage.data
import torch
from PIL import Image

from ..distortions import corruption_torch as E
from ..distortions.corruption_params import resolve_params
from ..distortions.corruptions import _corrupt_chunk
from ..errors import UsageError
from ..metrics import ALL_CORRUPTIONS, SEVERITIES
from ..process import keep_freed_memory
from ._command import CONTEXT, check_output_path, check_positive, run_command


def photos(size: int, n: int) -> np.ndarray:
    src = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
           skimage.data.rocket(), skimage.data.immunohistochemistry()]
    return np.stack([np.asarray(Image.fromarray(src[i % len(src)]).resize((size, size), Image.BILINEAR))
                     for i in range(n)])


def _timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench(size: int, n: int, severity: int, device: str) -> list[dict]:
    images = photos(size, n)
    params = resolve_params("auto", images.shape[1:3])
    rows = []
    for c in ALL_CORRUPTIONS:
        def ref():
            return _corrupt_chunk(images, 0, c, severity, 0, params, "reference")
        ref()  # warm-up (numba compile, caches)
        t_ref = _timed(ref)
        t_torch = None
        if c in E.IMPLEMENTED:
            def tor():
                out = E.corrupt_numpy(images, c, severity, 0, params, device=device)
                if device != "cpu":
                    torch.cuda.synchronize()
                return out
            tor()
            t_torch = _timed(tor, repeats=2)
        rows.append({"size": size, "params": params, "corruption": c, "severity": severity,
                     "images": n, "reference_img_s": n / t_ref,
                     "torch_img_s": None if t_torch is None else n / t_torch,
                     "speedup": None if t_torch is None else t_ref / t_torch,
                     "torch_default": c in E.TORCH_DEFAULT})
    return rows


def overall(rows: list[dict], default_only: bool) -> float:
    t_ref = sum(r["images"] / r["reference_img_s"] for r in rows)
    t_new = 0.0
    for r in rows:
        use_torch = r["torch_img_s"] is not None and (r["torch_default"] or not default_only)
        t_new += r["images"] / (r["torch_img_s"] if use_torch else r["reference_img_s"])
    return t_ref / t_new


def parse_sizes(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"--sizes takes a comma list of image sizes in pixels; got {text!r} (e.g. --sizes 32,224)")
    return [int(p) for p in parts]


def check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"--device takes cpu or cuda[:N]; got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch sees no CUDA GPU here; pass --device cpu")


@click.command("corrupt", context_settings=CONTEXT, help=__doc__.split("\n\n")[1],
               short_help="Images per second of the reference and torch corruption engines.")
@click.option("--threads", type=int, default=1, help="torch and OpenCV threads (default 1)")
@click.option("--sizes", default="32,224", help="comma list of image sizes in pixels (default 32,224)")
@click.option("--images", type=int, default=None, help="images per size (default 256 at 32, 16 at 224)")
@click.option("--severity", type=int, default=3, help="corruption severity, 1 to 5 (default 3)")
@click.option("--device", default="cpu", help="where the torch engine runs: cpu or cuda[:N] (default cpu)")
@click.option("--json", "json_path", metavar="PATH", default=None, help="also write the rows as JSON")
def command(threads, sizes, images, severity, device, json_path):
    check_positive("--threads", threads)
    check_positive("--images", images)
    if severity not in SEVERITIES:
        raise UsageError(f"--severity takes 1 to 5; got {severity} (e.g. --severity 3)")
    sizes = parse_sizes(sizes)
    check_device(device)
    check_output_path("--json", json_path)
    keep_freed_memory()  # as every cell does (runner): both engines get the same allocator
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    all_rows = []
    click.echo(f"threads={threads} device={device} torch {torch.__version__} severity {severity}")
    for size in sizes:
        n = images or (256 if size <= 64 else 16)
        rows = bench(size, n, severity, device)
        all_rows += rows
        click.echo(f"\n{size}x{size}, params {rows[0]['params']}, {n} images")
        click.echo("| corruption        | reference img/s | torch img/s | speedup | default |")
        click.echo("|-------------------|-----------------|-------------|---------|---------|")
        for r in rows:
            t = "-" if r["torch_img_s"] is None else f"{r['torch_img_s']:.0f}"
            x = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
            d = "torch" if r["torch_default"] else "reference"
            click.echo(f"| {r['corruption']:17s} | {r['reference_img_s']:15.0f} | {t:>11s} | {x:>7s} | {d:9s} |")
        click.echo(f"overall (19 corruptions, auto engine): {overall(rows, True):.1f}x; "
                   f"every torch implementation: {overall(rows, False):.1f}x")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(all_rows, fh, indent=1)


def main(argv=None) -> int:
    """``poolbench bench corrupt`` on ``argv``: the exit code (2 for bad input, as one line)."""
    return run_command(command, argv, "poolbench bench corrupt", "bench_corrupt")
