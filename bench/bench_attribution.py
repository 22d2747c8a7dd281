"""Throughput (images/s) of every attribution method at the demo resolution: batched on the
device (``attribute`` on a whole batch, as ``attribute_split`` does) vs a one-image-at-a-time
loop over the same call. Prints a table with the batched/loop speed-up ratio.

    python bench/bench_attribution.py [--resolution 64] [--images 32] [--device auto] [--methods ...]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from xaipipe.config import validate_config
from xaipipe.device import claim_device
from xaipipe.explain.attribution import attribute, hookable_copy
from xaipipe.explain.oracle import REFERENCE_METHODS
from xaipipe.registry import BUILTIN_METHODS

METHODS = [m for m in BUILTIN_METHODS if m not in REFERENCE_METHODS]
from xaipipe.models import build_model


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    settings = validate_config({"resolution": args.resolution}, source="bench")["explain"]
    settings = {**settings, "batch_size": args.images}
    with claim_device(args.device) as device:
        torch.manual_seed(0)
        model = hookable_copy(build_model(20).to(device))
        images = torch.rand(args.images, 3, args.resolution, args.resolution, device=device)
        targets = torch.arange(args.images, device=device) % 20
        print(f"device {device}, {args.images} images at {args.resolution} px, "
              f"ig_steps {settings['ig_steps']}, noise samples {settings['noise_tunnel_samples']}")
        print(f"{'method':24s} {'batched img/s':>14s} {'loop img/s':>11s} {'ratio':>7s}")
        for method in args.methods:
            attribute(model, images[:2], targets[:2], method, settings)          # warm-up
            batched = _timed(lambda: attribute(model, images, targets, method, settings), device)
            loop = _timed(lambda: [attribute(model, images[i:i + 1], targets[i:i + 1], method, settings,
                                             first_index=i) for i in range(args.images)], device)
            print(f"{method:24s} {args.images / batched:14.1f} {args.images / loop:11.1f} "
                  f"{loop / batched:7.1f}")


if __name__ == "__main__":
    main()
