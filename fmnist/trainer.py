"""The trainer: data already on the device, batches are slices, augmentation batched on the device.

Readable top to bottom like airbench: pick device and precision, build optimizer and schedule,
then the loop. Callers observe training through ``on_report``, which may return a reason to stop
(a pruner does; the run then ends with that ``stop_reason``), and ``on_progress`` (for progress
bars).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment import augmented_input, to_input
from .data import Split, Splits
from .devices import PRECISIONS, device_name
from .errors import UsageError
from .trainspec import TrainSpec


def pick_device(name: str = "auto") -> torch.device:
    """auto, cpu, cuda, or cuda:K for the K-th GPU (one worker per GPU)."""
    kind, _, index = device_name(name).partition(":")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{name}: no CUDA GPU is available here (cpu or auto work)", "device")
    if index and int(index) >= torch.cuda.device_count():
        raise UsageError(f"{name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}", "device")
    return torch.device(name)


def pick_precision(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    auto: bf16 on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX), where oneDNN runs bf16
    convolutions several times faster than fp32 (bench/throughput.py measures it).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"must be one of {', '.join(PRECISIONS)}, got {precision!r}", "precision")
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new model on ``device`` (None where it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def precision_name(amp: torch.dtype | None) -> str:
    return "fp32" if amp is None else str(amp).replace("torch.", "")


@dataclass
class Report:
    """One evaluation point: every epoch end, and every images-seen checkpoint asked for."""
    epoch: float            # epochs done, fractional at checkpoints inside an epoch
    images_seen: int
    train_loss: float       # mean over the batches since the previous report
    val_acc: float | None   # None when there is no validation split
    checkpoints: tuple[int, ...] = ()  # the checkpoints asked for that this point serves, before rounding up


@dataclass
class TrainResult:
    curve: list[Report] = field(default_factory=list)
    val_acc: float | None = None
    test_acc: float | None = None
    test_top5: float | None = None
    images_seen: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0        # validation at the evaluation points and the test set at the end
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


WARMUP_IMAGES = 3000  # the one-cycle warm-up: 10% of training, but no more than this many images


def lr_factor(schedule: str, step: int, total: int, batch_size: int = 256) -> float:
    if schedule == "constant":
        return 1.0
    # A fixed short warm-up rather than 10% of a long run: a pruning rung a few thousand images in
    # then sees the learning rate at its peak, not a candidate still warming up (which read as
    # "at chance" at the first rung when the warm-up was a tenth of a several-epoch budget).
    warm = max(1, min(total // 10, WARMUP_IMAGES // batch_size)) if schedule == "onecycle" else 0
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


def train_images(n: int, batch: int, epochs: int) -> int:
    """Images a training of ``epochs`` over ``n`` images at ``batch`` sees: whole batches only (one
    shape for torch.compile, and batch norm never sees a batch of one)."""
    return n // batch * batch * epochs


def whole_batches(images: int, batch: int, total_images: int) -> int:
    """``images`` rounded up to a whole number of batches, at most the end of training."""
    return min(total_images, -(-images // batch) * batch)


def evaluation_points(total_images: int, batch: int, steps_per_epoch: int,
                      checkpoints: Iterable[int], every_epoch: bool) -> list[int]:
    """Images-seen counts at which to evaluate, ascending, each a whole number of batches; the last
    one is the end of training."""
    points = {whole_batches(c, batch, total_images) for c in checkpoints if 0 < c < total_images}
    if every_epoch:
        points.update(e * steps_per_epoch * batch for e in range(1, total_images // (steps_per_epoch * batch) + 1))
    points.add(total_images)
    return sorted(points)


def train(
    model: nn.Module,
    data: Splits,
    spec: TrainSpec,
    *,
    seed: int = 0,
    precision: str = "auto",
    compile: bool = False,
    checkpoints: Mapping[int, Split | None] | Sequence[int] = (),
    every_epoch: bool = True,
    on_report: Callable[[Report], str | None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (already on the training device) with ``spec``.

    Evaluation happens at ``checkpoints`` (images-seen counts; a mapping gives the validation
    images to use there, e.g. a subset sized for a pruning decision; None or a plain sequence: the
    whole validation split), at every epoch end if ``every_epoch``, and at the end on the whole
    validation split. ``on_report`` may return a reason to stop (a pruner does): the run ends
    there with that ``stop_reason``. A non-finite loss stops it the same way. The test set is
    evaluated only for a run that finished, and only if ``evaluate_test``.
    """
    device = data.train.images.device
    amp = pick_precision(device, precision)
    step_model = torch.compile(model) if compile else model
    model.to(device=device, memory_format=torch.channels_last).train()
    n = len(data.train)
    if n < 2:
        raise UsageError(f"the training split holds {n} image(s); training needs at least 2 "
                          f"(batch norm normalizes over a batch)")
    bs = min(spec.batch_size, n)
    steps_per_epoch = n // bs
    total_images = train_images(n, bs, spec.epochs)
    val_at = dict(checkpoints) if isinstance(checkpoints, Mapping) else dict.fromkeys(checkpoints)
    points = evaluation_points(total_images, bs, steps_per_epoch, val_at, every_epoch)
    # A checkpoint rounded up to a whole batch keeps its name and the validation images asked for
    # at it; on a tiny split two checkpoints can round to one point, which then serves both.
    asked: dict[int, tuple[int, ...]] = {}
    for c in sorted(c for c in val_at if 0 < c < total_images):
        point = whole_batches(c, bs, total_images)
        asked[point] = (*asked.get(point, ()), c)
    val_at = {point: val_at[cs[-1]] for point, cs in asked.items()}
    opt = make_optimizer(model, spec)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(spec.schedule, s, steps_per_epoch * spec.epochs, bs))
    result = TrainResult(device=str(device), precision=precision_name(amp))

    # Seeded generators, not the global RNG: batch order and augmentation from ``gen``, dropout
    # masks from the forked global state, so a caller's own random state is left as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator(device=device).manual_seed(seed)
        seen = 0
        for point in points:
            clock = time.perf_counter()
            loss_sum, steps = torch.zeros((), device=device), 0
            while seen < point:
                step = seen // bs
                if step % steps_per_epoch == 0:
                    perm = torch.randperm(n, device=device, generator=gen)
                i = step % steps_per_epoch
                idx = perm[i * bs:(i + 1) * bs]
                x = augmented_input(data.train.images[idx], spec.augment, gen).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    loss = F.cross_entropy(step_model(x), data.train.labels[idx], label_smoothing=spec.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach()
                steps += 1
                seen += bs
                if on_progress is not None:
                    on_progress(seen, total_images)
                if steps % 64 == 0 and not torch.isfinite(loss_sum):  # a diverged run stops early
                    break
            if device.type == "cuda":
                torch.cuda.synchronize()
            result.train_seconds += time.perf_counter() - clock
            mean_loss = loss_sum.item() / max(1, steps)
            if not math.isfinite(mean_loss):
                result.stop_reason = f"non-finite loss ({mean_loss}) after {seen} images"
                break
            clock = time.perf_counter()
            val = (val_at.get(point) or data.val) if point < total_images else data.val
            val_acc = accuracy(predict(model, val.images, amp), val.labels) if len(val) else None
            result.eval_seconds += time.perf_counter() - clock
            report = Report(round(seen / (steps_per_epoch * bs), 4), seen, mean_loss, val_acc, asked.get(point, ()))
            result.curve.append(report)
            result.val_acc = val_acc
            if on_report is not None and point < total_images:
                result.stop_reason = on_report(report) or None
                if result.stop_reason:
                    break
    result.images_seen = seen
    if on_report is not None and not result.stop_reason:
        on_report(result.curve[-1])  # the end of training, for observers; nothing left to stop
    if evaluate_test and not result.stop_reason:
        clock = time.perf_counter()
        logits = predict(model, data.test.images, amp)
        result.test_acc = accuracy(logits, data.test.labels)
        result.test_top5 = accuracy(logits, data.test.labels, k=5)
        result.eval_seconds += time.perf_counter() - clock
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
