"""Corruption engines side by side: ``poolbench bench corrupt [--threads N]
[--sizes 32,224] [--images N] [--severity S] [--device cpu|cuda] [--json PATH]``.

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

import argparse
import json
import sys
import time

import cv2
import numpy as np
import skimage.data
import torch
from PIL import Image

from ..distortions import corruption_torch as E
from ..distortions.corruption_params import resolve_params
from ..distortions.corruptions import _corrupt_chunk
from ..metrics import ALL_CORRUPTIONS
from ..process import keep_freed_memory


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="poolbench bench corrupt")
    ap.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1)")
    ap.add_argument("--sizes", default="32,224")
    ap.add_argument("--images", type=int, default=None, help="images per size (default 256 at 32, 16 at 224)")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    keep_freed_memory()  # as every cell does (runner): both engines get the same allocator
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    all_rows = []
    print(f"threads={args.threads} device={args.device} torch {torch.__version__} severity {args.severity}")
    for size in (int(s) for s in args.sizes.split(",")):
        n = args.images or (256 if size <= 64 else 16)
        rows = bench(size, n, args.severity, args.device)
        all_rows += rows
        print(f"\n{size}x{size}, params {rows[0]['params']}, {n} images")
        print("| corruption        | reference img/s | torch img/s | speedup | default |")
        print("|-------------------|-----------------|-------------|---------|---------|")
        for r in rows:
            t = "-" if r["torch_img_s"] is None else f"{r['torch_img_s']:.0f}"
            x = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
            d = "torch" if r["torch_default"] else "reference"
            print(f"| {r['corruption']:17s} | {r['reference_img_s']:15.0f} | {t:>11s} | {x:>7s} | {d:9s} |")
        print(f"overall (19 corruptions, auto engine): {overall(rows, True):.1f}x; "
              f"every torch implementation: {overall(rows, False):.1f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(all_rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
