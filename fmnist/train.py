"""The trainer: data already on the device, batches are slices, augmentation batched on the device.

Readable top to bottom like airbench: pick device and precision, build optimizer and schedule,
then the loop. ``fmnist`` knows nothing of Optuna: callers observe training through ``on_report``
(and may stop it by raising, e.g. optuna.TrialPruned) and ``on_progress`` (for progress bars).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment import augmented_input, to_input
from .data import Splits
from .errors import FmnistError
from .trainspec import TrainSpec

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


def pick_device(name: str = "auto") -> torch.device:
    if name not in DEVICES:
        raise FmnistError(f"--device: must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FmnistError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    return torch.device(name)


def pick_precision(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    auto: bf16 on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX), where oneDNN runs bf16
    convolutions several times faster than fp32 (bench/throughput.py measures it).
    """
    if precision not in PRECISIONS:
        raise FmnistError(f"--precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def precision_name(amp: torch.dtype | None) -> str:
    return "fp32" if amp is None else str(amp).replace("torch.", "")


@dataclass
class Report:
    """One evaluation point: every epoch end, and every images-seen checkpoint asked for."""
    epoch: float            # epochs done, fractional at checkpoints inside an epoch
    images_seen: int
    train_loss: float       # mean over the batches since the previous report
    val_acc: float | None   # None when there is no validation split


@dataclass
class TrainResult:
    curve: list[Report] = field(default_factory=list)
    val_acc: float | None = None
    test_acc: float | None = None
    test_top5: float | None = None
    images_seen: int = 0
    train_seconds: float = 0.0
    stop_reason: str | None = None   # set when training stopped early (non-finite loss)
    device: str = ""
    precision: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds else 0.0

    @property
    def epochs_run(self) -> float:
        return self.curve[-1].epoch if self.curve else 0.0


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    # Weight decay on weights only: decaying biases and norm scales hurts small nets and buys nothing.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": spec.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.momentum > 0)
    cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=spec.lr)


def lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "constant":
        return 1.0
    warm = max(1, total // 10) if schedule == "onecycle" else 0
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@torch.no_grad()
def predict(model: nn.Module, images_u8: torch.Tensor, amp: torch.dtype | None = None,
            batch_size: int = 2000) -> torch.Tensor:
    """Logits (N, classes) in fp32 for uint8 images already on the model's device."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = to_input(images_u8[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out.append(model(x).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 10)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    topk = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (topk == labels.view(-1, 1)).any(dim=1).float().mean().item()


def train(
    model: nn.Module,
    data: Splits,
    spec: TrainSpec,
    *,
    seed: int = 0,
    precision: str = "auto",
    compile: bool = False,
    checkpoints: Sequence[int] = (),
    on_report: Callable[[Report], str | None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (already on the training device) with ``spec``.

    ``checkpoints`` are images-seen counts at which to evaluate and report besides every epoch end
    (rungs for pruning can fall inside an epoch). ``on_report`` may return a reason to stop
    training early (a pruner does): the run ends there, with that ``stop_reason`` and the curve so
    far. A non-finite loss stops the run the same way. Exceptions from ``on_report`` propagate.
    """
    device = data.train.images.device
    amp = pick_precision(device, precision)
    torch.manual_seed(seed)  # dropout masks
    gen = torch.Generator(device=device).manual_seed(seed)  # batch order and augmentation
    model.to(device=device, memory_format=torch.channels_last).train()
    step_model = torch.compile(model) if compile else model
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    n = len(data.train)
    bs = min(spec.batch_size, n)
    steps_per_epoch = n // bs  # whole batches only: one shape for torch.compile, no BN on 1 sample
    total_steps = steps_per_epoch * spec.epochs
    total_images = total_steps * bs
    opt = make_optimizer(model, spec)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(spec.schedule, s, total_steps))
    pending = sorted(c for c in checkpoints if 0 < c < total_images)

    result = TrainResult(device=str(device), precision=precision_name(amp))
    seen, loss_sum, loss_steps = 0, torch.zeros((), device=device), 0
    clock = time.perf_counter()

    def report() -> None:
        nonlocal loss_sum, loss_steps, clock
        if device.type == "cuda":
            torch.cuda.synchronize()
        result.train_seconds += time.perf_counter() - clock
        mean_loss = loss_sum.item() / max(1, loss_steps)
        if not math.isfinite(mean_loss):
            result.stop_reason = f"non-finite loss ({mean_loss}) after {seen} images"
            return
        val_acc = accuracy(predict(model, data.val.images, amp), data.val.labels) if len(data.val) else None
        rep = Report(round(seen / (steps_per_epoch * bs), 4), seen, mean_loss, val_acc)
        result.curve.append(rep)
        result.val_acc = val_acc
        loss_sum, loss_steps = torch.zeros((), device=device), 0
        if on_report is not None:
            result.stop_reason = on_report(rep) or None
        clock = time.perf_counter()

    for _epoch in range(spec.epochs):
        perm = torch.randperm(n, device=device, generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            x = augmented_input(data.train.images[idx], spec.augment, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = F.cross_entropy(step_model(x), data.train.labels[idx],
                                       label_smoothing=spec.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
            loss_steps += 1
            seen += bs
            if on_progress is not None:
                on_progress(seen, total_images)
            if pending and seen >= pending[0]:
                while pending and seen >= pending[0]:
                    pending.pop(0)
                if i + 1 < steps_per_epoch:  # the epoch-end report follows anyway
                    report()
            elif loss_steps % 32 == 0 and not torch.isfinite(loss_sum):  # stop a diverged run early
                report()
            if result.stop_reason:
                break
        if not result.stop_reason:
            report()
        if result.stop_reason:
            break
    result.images_seen = seen
    if evaluate_test and not result.stop_reason:
        logits = predict(model, data.test.images, amp)
        result.test_acc = accuracy(logits, data.test.labels)
        result.test_top5 = accuracy(logits, data.test.labels, k=5)
    return result


@torch.no_grad()
def latency_ms(model: nn.Module, image_u8: torch.Tensor, precision: str = "auto", repeats: int = 30) -> float:
    """Median wall time of inference on one image (1, 28, 28), normalization included, in ms."""
    device = image_u8.device
    amp = pick_precision(device, precision)
    times = []
    for i in range(repeats + 5):  # the first calls pay for kernel selection and caches
        start = time.perf_counter()
        predict(model, image_u8, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]
