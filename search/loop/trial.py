"""One trial, top to bottom: candidate -> free checks -> train through the rungs -> record -> store.

Each step says what became of the trial by returning, not by raising: the pipeline ends in an
``Ending`` (complete with its objective values, pruned at a rung, or skipped before any training,
each with its reason), and ``Search.objective`` maps that to Optuna's terms in one place. Every
write goes through the trial's ``TrialWriter`` (``search.study.rescue``), which keeps what was
written for a trial that another worker may fail under a paused one.

Selection is on validation accuracy; test accuracy is recorded beside it and never returned to
the sampler.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable

import torch
import fmnist
from fmnist.errors import SpecError
from space import ModelSpec, build, flops, inference_bytes, param_count, pass_flops, summary, training_bytes, zoo
from space.sample import carried_over, sample

from search.loop.plan import TOP_SECONDS_SHARE, Plan
from search.study import claims, optuna_api, record
from search.study.record import Outcome
from search.study.rescue import TrialWriter

MEMORY_SHARE = 0.8  # of the memory free now: the rest is left to the data set, the allocator and the system


def too_big(arch, batch_size: int, device: torch.device, training: bool = True) -> str | None:
    """Why training (or ``training`` false: running) ``arch`` would not fit in memory here, from
    the spec, before allocating."""
    need = (training_bytes if training else inference_bytes)(arch, batch_size)
    free = fmnist.available_memory(device)
    if free is None or need <= MEMORY_SHARE * free:
        return None
    return (f"needs about {need / 2**30:.1f} GiB to {'train' if training else 'run'} at batch {batch_size} "
            f"(estimated from the spec), {free / 2**30:.1f} GiB free on {device}")


@functools.lru_cache(maxsize=None)
def canonical(spec_json: str | None) -> str | None:
    """A stored spec in today's compact form, so that studies written with indented specs still
    find their duplicates (None and foreign text stay as they are)."""
    try:
        return ModelSpec.from_json(spec_json).to_json(compact=True) if spec_json else spec_json
    except SpecError:
        return spec_json


@dataclass(frozen=True)
class Ending:
    """What became of a trial: the outcome, the objective values of a complete one, and why a
    pruned or skipped one stopped."""
    outcome: Outcome
    values: list[float] | None = None
    reason: str | None = None


def skipped(writer: TrialWriter, reason: str) -> Ending:
    writer.set_user_attr(record.SKIPPED, reason)
    return Ending(Outcome.SKIPPED, reason=reason)


def candidate(writer: TrialWriter, plan: Plan) -> ModelSpec:
    """The trial's model: an enqueued seed preset, else a sample of the plan's space; trained for
    the epochs the plan gives a net of its cost."""
    preset = writer.user_attrs.get(record.PRESET)
    if not preset and plan.space == "stages":
        optuna_api.fix_params(writer.trial, carried_over(optuna_api.given_params(writer.trial)))
    spec = zoo.get(preset) if preset else sample(writer.trial, plan.epochs, plan.space)
    epochs = plan.epochs_for(pass_flops(spec.arch))
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=epochs))


def over_budget(plan: Plan, n_params: int, n_flops: int, n_pass: int, top_images: int) -> str | None:
    """Why a candidate is over a budget checked from its spec alone (None: within them). The
    user's --max-flops caps the model's FLOPs as it predicts; the device's caps are on training
    time, which pays one forward pass an image (``n_pass``) whatever the test-time augmentation."""
    if plan.max_params is not None and n_params > plan.max_params:
        return f"over --max-params ({n_params:,} > {plan.max_params:,})"
    if plan.max_flops is not None and n_flops > plan.max_flops:
        return f"over --max-flops ({n_flops:,} > {plan.max_flops:,})"
    if plan.max_flops is None and plan.profile_max_flops is not None and n_pass > plan.profile_max_flops:
        # A seed skipped here loses nothing: the front is compared with its reported figures.
        return f"over the profile's {plan.profile_max_flops / 1e6:g} MFLOPs ({n_pass / 1e6:.1f}; --max-flops to change)"
    if plan.max_flops is None and plan.max_top_seconds and plan.pace:
        top = plan.pace.seconds(n_pass, top_images)
        if top > plan.max_top_seconds:
            return (f"its top-rung training would take about {top / 60:.1f} min here, over "
                    f"{plan.max_top_seconds / 60:.1f} min ({TOP_SECONDS_SHARE:.0%} of --timeout; --max-flops to change)")
    return None


def figures(result: fmnist.TrainResult) -> dict:
    """What a training leaves on its trial (a missing figure is absent, not None: the dashboard sorts)."""
    attrs = {
        record.VAL_ACC: result.val_acc, record.TEST_ACC: result.test_acc, record.TEST_TOP5: result.test_top5,
        record.CURVE: [[r.epoch, round(r.val_acc, 4)] for r in result.curve if r.val_acc is not None],
        record.EPOCHS_RUN: result.epochs_run, record.IMAGES_SEEN: result.images_seen,
        record.TRAIN_SECONDS: round(result.train_seconds, 3), record.EVAL_SECONDS: round(result.eval_seconds, 3),
        record.IMAGES_PER_S: round(result.images_per_s, 1), record.DEVICE: result.device,
        record.PRECISION: result.precision,
    }
    return {k: v for k, v in attrs.items() if v is not None}


@dataclass
class Pipeline:
    """The steps of one trial with what they need from the loop: the plan, the data, the study's
    view of duplicates and claims, the pruner's hook and the store for weights."""
    plan: Plan
    data: fmnist.Splits
    duplicate_of: Callable[[str, int], int | None]   # an earlier trial of this spec, or None
    claim: Callable[[str, int], int | None] | None   # the atomic claim (None: an in-memory study)
    hook: Callable[..., Callable | None]             # (writer, sizes, budget) -> the trainer's on_report
    rung_val: dict[int, fmnist.Split]
    store: object | None = None
    on_start: Callable[[int], None] | None = None           # a trial's training begins
    on_progress: Callable[[int, int], None] | None = None   # images trained, of the top rung

    def run(self, writer: TrialWriter) -> Ending:
        plan = self.plan
        try:
            spec = candidate(writer, plan)
        except SpecError as e:
            return skipped(writer, f"invalid: {e}")
        arch = spec.arch
        sizes = {"params": param_count(arch), "flops": flops(arch)}
        spec_json = spec.to_json(compact=True)
        writer.set_system_attr(record.SPEC, spec_json)
        for key, value in {record.PARAMS: sizes["params"], record.FLOPS: sizes["flops"],
                           record.SUMMARY: summary(arch)}.items():
            writer.set_user_attr(key, value)
        batch = min(spec.train.batch_size, len(self.data.train))
        top = fmnist.train_images(len(self.data.train), batch, spec.train.epochs)  # the top rung
        why = over_budget(plan, sizes["params"], sizes["flops"], pass_flops(arch), top)
        if why:
            return skipped(writer, why)
        big = too_big(arch, batch, self.data.train.images.device)
        if big:
            return skipped(writer, f"too large for this machine: {big}")
        dup = self.duplicate_of(spec_json, writer.number)
        if dup is None and self.claim is not None:  # the check above can race; the claim cannot
            dup = self.claim(spec_json, writer.number)
        if dup is not None:
            return skipped(writer, f"duplicate of trial {dup}")

        model = build(arch, seed=plan.seed)
        hook = self.hook(writer, sizes, top)
        if self.on_start is not None:
            self.on_start(writer.number)
        result = fmnist.train(model, self.data, spec.train, seed=plan.seed, precision=plan.precision,
                              compile=plan.compile, checkpoints=self.rung_val if hook else {},
                              every_epoch=False, on_report=hook, on_progress=self.on_progress)
        for key, value in figures(result).items():
            writer.set_user_attr(key, value)
        if result.stop_reason:  # pruned at a rung, or a non-finite loss
            writer.set_user_attr(record.PRUNED_REASON, result.stop_reason)
            return Ending(Outcome.PRUNED, reason=result.stop_reason)
        if self.store is not None:
            writer.save_weights(model, self.store)
        values = {"acc": result.val_acc, **{k: float(v) for k, v in sizes.items()}}
        if "latency" in plan.objectives:
            values["latency"] = fmnist.latency_ms(model, self.data.val.images[:1], plan.precision)
            writer.set_user_attr(record.LATENCY_MS, values["latency"])
        return Ending(Outcome.COMPLETE, values=[values[o] for o in plan.objectives])


def claim_in(engine, study_id: int, released: Callable[[int], bool]) -> Callable[[str, int], int | None]:
    """The atomic claim of a spec in the study's database (``search.study.claims``)."""
    return lambda spec_json, number: claims.claim(engine, study_id, spec_json, number, released)
