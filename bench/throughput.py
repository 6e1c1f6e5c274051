"""Training images/s: our trainer against the plain loop a user would write, in the same run.

The baseline is torchvision's FashionMNIST dataset with ToTensor + Normalize, a shuffling
DataLoader (default num_workers=0), the same model, batch size, optimizer and device, fp32 and
default memory format. Ours keeps the uint8 set on the device and slices batches (see
fmnist/train.py), with its default precision (bf16 on CUDA and on CPUs with native bf16) and
channels_last. Both are timed over the same number of training images after a warm-up.

    python bench/throughput.py --data-dir ../shared/data/fashion-mnist [--device cpu] [--images 10240]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import fmnist
from fmnist import TrainSpec
from fmnist.data import FILES, MEAN, STD
from space import build, param_count, zoo

MODELS = ("seed003", "seed000-cnn2pooling2fully1-a")  # 484k params, and about 100k


def torchvision_root(data_dir: Path, tmp: Path) -> Path:
    """torchvision wants uncompressed files in ROOT/FashionMNIST/raw; make that layout in tmp."""
    from fmnist import idx
    files = fmnist.data.find_files(fmnist.resolve_data_dir(data_dir))
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for key, path in files.items():
        (raw / FILES[key]).write_bytes(idx.decompress(path, idx.read_raw(path)))
    return tmp


def plain_loop(arch, root: Path, device: torch.device, batch_size: int, images: int, warmup: int) -> float:
    """Images/s of the loop most tutorials show."""
    import torchvision
    import torchvision.transforms as T
    ds = torchvision.datasets.FashionMNIST(str(root), train=True, transform=T.Compose(
        [T.ToTensor(), T.Normalize((MEAN,), (STD,))]))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True)
    model = build(arch).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps, timed_steps, start = 0, images // batch_size, 0.0
    while True:
        for x, y in loader:
            if steps == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if steps == warmup + timed_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                return timed_steps * batch_size / (time.perf_counter() - start)


def ours(arch, ds: fmnist.FashionMNIST, device: torch.device, batch_size: int, images: int,
         precision: str, compile: bool) -> float:
    spec = TrainSpec(batch_size=batch_size, epochs=1)
    warm = fmnist.make_splits(ds, val_size=0, train_subset=4 * batch_size).to(device)
    fmnist.train(build(arch), warm, spec, precision=precision, compile=compile, evaluate_test=False)
    data = fmnist.make_splits(ds, val_size=0, train_subset=images).to(device)
    return fmnist.train(build(arch), data, spec, precision=precision, compile=compile,
                        evaluate_test=False).images_per_s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", type=int, default=10240, help="training images timed per run")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    args = p.parse_args()
    device = fmnist.pick_device(args.device)
    ds = fmnist.load(args.data_dir, download=False)
    tmp = Path(tempfile.mkdtemp())
    try:
        root = torchvision_root(args.data_dir, tmp)
        print(f"device {device}, batch {args.batch_size}, {args.images} images timed, torch {torch.__version__}, "
              f"threads {torch.get_num_threads()}")
        print(f"{'model':32s} {'params':>9s} {'plain loop':>11s} {'ours fp32':>10s} {'ours auto':>10s}"
              f"{' ours compiled':>15s} {'ratio':>7s}")
        for name in args.models.split(","):
            arch = zoo.get(name).arch
            base = plain_loop(arch, root, device, args.batch_size, args.images, warmup=3)
            fp32 = ours(arch, ds, device, args.batch_size, args.images, "fp32", False)
            auto = ours(arch, ds, device, args.batch_size, args.images, "auto", False)
            comp = ours(arch, ds, device, args.batch_size, args.images, "auto", True) if args.compile else None
            best = max(auto, comp or 0)
            print(f"{name:32s} {param_count(arch):>9,} {base:>11,.0f} {fp32:>10,.0f} {auto:>10,.0f}"
                  f"{(f'{comp:,.0f}' if comp else '-'):>15s} {best / base:>6.2f}x", flush=True)
    finally:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
