"""Where a residual net's training step spends its time, by feature-map size, and how fast the
stages space's residual warm start trains with one or two blocks at 28x28 (the ``first_blocks``
choice): the bare step (forward, backward, AdamW; batch 256, channels-last, random images), so
that the ratio is the architecture's alone.

    python bench/stage_time.py [--threads 2] [--steps 8]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import profile  # noqa: E402

from space import build, flops, param_count  # noqa: E402
from space.sample import WARM_STARTS, fixed  # noqa: E402

BATCH = 256  # the warm start's


def stepper(arch):
    model = build(arch, seed=0).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(3):  # kernel choice and caches, before anything is timed or profiled
        step()
    return step


def images_per_s(arch, steps: int, repeats: int = 3) -> float:
    """The fastest of ``repeats`` timings (noise only slows a run)."""
    step = stepper(arch)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = max(best, steps * BATCH / (time.perf_counter() - start))
    return best


def time_by_side(arch, steps: int) -> dict[int, float]:
    """Self CPU time of the step's operators, by the side of their first 4-d input (0: the rest)."""
    step = stepper(arch)
    with profile(record_shapes=True) as prof:
        for _ in range(steps):
            step()
    by_side: dict[int, float] = defaultdict(float)
    for e in prof.key_averages(group_by_input_shape=True):
        shape = next((s for s in e.input_shapes if len(s) == 4), None)
        by_side[shape[2] if shape else 0] += e.self_cpu_time_total
    total = sum(by_side.values())
    return {side: t / total for side, t in sorted(by_side.items(), reverse=True)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    archs = {k: fixed({**WARM_STARTS[6], "first_blocks": k}).arch for k in (2, 1)}
    shares = time_by_side(archs[2], args.steps)
    print(f"first_blocks 2 ({param_count(archs[2]):,} params): share of the step's time by feature-map side: "
          + ", ".join(f"{side or 'other'}: {share:.0%}" for side, share in shares.items()))
    rates = {k: images_per_s(arch, args.steps) for k, arch in archs.items()}
    for k, arch in archs.items():
        print(f"first_blocks {k}: {param_count(arch):,} params, {flops(arch) / 1e6:.1f} MFLOPs, {rates[k]:.0f} images/s")
    print(f"one block at 28x28 / two: {rates[1] / rates[2]:.2f}x the images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
