"""Batched SCG/CCG (xaipipe.evaluate.confidence_gain) against a per-image loop on the same inputs.

The per-image loop is Algorithm 1 of the confidence-gain paper run literally: one image and
one mask at a time, one forward per growth step. The batched version handles all images and
all mask sets (methods + agreement pairs) as one set of items, one forward pass per growth
step. Both must give the same numbers; the script checks that and prints the speed ratio.

Inputs: a randomly initialised ResNet18, random images, smooth random heat maps (blurred
noise); labels are the model's own predictions on the full image, so every mask can reach
an accurate classification and the growth loop does real work.

    python bench/bench_confidence_gain.py [--images 32] [--resolution 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from xaipipe.evaluate.confidence_gain import (
    base_images, build_masks, confidence_gain, gaussian_kernel_size, mask_sets, opencv_sigma)
from xaipipe.evaluate.removal import tie_orders
from xaipipe.models import build_model


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    synchronise(device)
    start = time.perf_counter()
    out = fn()
    synchronise(device)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--methods", type=int, default=3, help="heat-map methods (pairs added)")
    parser.add_argument("--rho", type=float, default=0.05)
    parser.add_argument("--max-growth", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = build_model(20).to(device).eval()
    size = args.resolution
    images = torch.rand(args.images, 3, size, size, device=device)
    kernel = gaussian_kernel_size(17, size)
    base = base_images(images, "gaussian", kernel, opencv_sigma(kernel))
    with torch.inference_mode():
        labels = model(images).argmax(1)
    methods = [f"m{i}" for i in range(args.methods)]
    noise = torch.rand(args.methods, args.images, 1, size, size, device=device)
    maps = {m: base_images(noise[i], "gaussian", kernel, 3.0)[:, 0] for i, m in enumerate(methods)}
    sets = mask_sets(methods, agreement=True)
    ties = tie_orders([str(i) for i in range(args.images)], size * size, 0, device)
    masks = build_masks(maps, sets, args.rho, ties)
    options = dict(max_growth=args.max_growth)

    confidence_gain(model, images[:2], base[:2], labels[:2], masks[:, :2], batch_size=2, **options)
    batched, t_batched = timed(lambda: confidence_gain(
        model, images, base, labels, masks, batch_size=args.batch_size, **options), device)

    def per_image():
        return [[confidence_gain(model, images[i:i + 1], base[i:i + 1], labels[i:i + 1],
                                 masks[s:s + 1, i:i + 1], batch_size=1, **options)
                 for i in range(args.images)] for s in range(len(sets))]

    looped, t_loop = timed(per_image, device)
    for name in ("scg", "ccg", "growth"):
        expected = getattr(batched, name).view(len(sets), args.images)
        got = torch.stack([torch.cat([getattr(r, name) for r in row]) for row in looped])
        # batch size changes the float summation order of the convolutions: allow rounding
        if not torch.allclose(got.float(), expected.float(), equal_nan=True, rtol=1e-3, atol=1e-6):
            raise SystemExit(f"batched and per-image {name} differ")
    items = len(sets) * args.images
    print(f"device {device}, {args.images} images x {len(sets)} mask sets = {items} items, "
          f"{size} px, rho {args.rho}, mean growth "
          f"{batched.growth[batched.growth >= 0].float().mean().item():.1f}")
    print(f"batched   {t_batched:8.2f} s")
    print(f"per-image {t_loop:8.2f} s")
    print(f"speed-up  {t_loop / t_batched:8.1f} x (same growth steps, SCG/CCG equal to 1e-3)")


if __name__ == "__main__":
    main()
