"""A user's own plain Optuna script, the baseline fmnist-search must beat (issue 9).

Multi-objective TPE over 1-3 blocks of conv 3x3/5x5 'same' + optional BN + ReLU + max-pool +
dropout and 0-2 dense layers; Adam; torchvision's dataset and DataLoader; 20,000 training images
x 2 epochs per trial; no pruning. Validation accuracy (10k held out of the training set) and
parameters are the objectives; test accuracy is recorded, never used.

    python bench/baseline_optuna.py --data-dir ../shared/data/fashion-mnist --minutes 10 --storage URL
"""
import argparse, gzip, shutil, tempfile
from pathlib import Path

import optuna, torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms


def torchvision_root(data_dir):
    """torchvision reads ROOT/FashionMNIST/raw/*-ubyte: unpack the .gz files there once."""
    root = Path(tempfile.mkdtemp()); raw = root / "FashionMNIST" / "raw"; raw.mkdir(parents=True)
    for f in Path(data_dir).glob("*-ubyte.gz"):
        with gzip.open(f) as src, open(raw / f.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def build(trial):
    layers, ch, side = [], 1, 28
    for i in range(trial.suggest_int("blocks", 1, 3)):
        out, k = trial.suggest_categorical(f"filters{i}", [16, 32, 64, 128]), trial.suggest_categorical(f"kernel{i}", [3, 5])
        layers += [nn.Conv2d(ch, out, k, padding="same")]
        layers += [nn.BatchNorm2d(out)] if trial.suggest_categorical(f"bn{i}", [False, True]) else []
        layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(trial.suggest_float(f"drop{i}", 0.0, 0.5))]
        ch, side = out, side // 2
    layers += [nn.Flatten()]; width = ch * side * side
    for j in range(trial.suggest_int("dense", 0, 2)):
        units = trial.suggest_categorical(f"units{j}", [32, 64, 128, 256])
        layers += [nn.Linear(width, units), nn.ReLU()]; width = units
    return nn.Sequential(*layers, nn.Linear(width, 10))


def accuracy(model, loader):
    model.eval(); right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += (model(x).argmax(1) == y).sum().item(); total += len(y)
    return right / total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True); p.add_argument("--storage", required=True)
    p.add_argument("--study", default="baseline"); p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--seed", type=int, default=0); p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads); torch.manual_seed(args.seed)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    root = torchvision_root(args.data_dir)
    full = datasets.FashionMNIST(root, train=True, transform=tf)
    test = DataLoader(datasets.FashionMNIST(root, train=False, transform=tf), batch_size=1000)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed)).tolist()
    val = DataLoader(Subset(full, order[:10_000]), batch_size=1000)
    train = DataLoader(Subset(full, order[10_000:30_000]), batch_size=128, shuffle=True)

    def objective(trial):
        model = build(trial)
        opt = torch.optim.Adam(model.parameters(), lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True))
        for _ in range(2):
            model.train()
            for x, y in train:
                opt.zero_grad(); nn.functional.cross_entropy(model(x), y).backward(); opt.step()
        params = sum(q.numel() for q in model.parameters())
        trial.set_user_attr("params", params); trial.set_user_attr("test_acc", accuracy(model, test))
        val_acc = accuracy(model, val); trial.set_user_attr("val_acc", val_acc)
        return val_acc, params

    study = optuna.create_study(study_name=args.study, storage=args.storage, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=args.seed), load_if_exists=True)
    study.optimize(objective, timeout=args.minutes * 60)


if __name__ == "__main__":
    main()
