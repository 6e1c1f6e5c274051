"""Running a study: the profile, the objective of one trial, progress, and when to stop.

A trial: sample (or take an enqueued seed preset) -> count params and FLOPs -> skip at no cost if
over budget, invalid or already trained -> train on the device-resident split -> record
everything as user attributes -> return the objectives. Selection is on validation accuracy;
test accuracy is recorded beside it and never returned to the sampler.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import fmnist
from fmnist.errors import SpecError
from space import ModelSpec, build, flops, param_count, zoo
from space.sample import sample

from . import study as studies
from .artifacts import save_weights
from .progress import Progress
from .prune import ParetoPruner, rung_images


@dataclass(frozen=True)
class Profile:
    name: str
    train_subset: int | None   # None: the whole training split
    epochs: int

    def describe(self, n_train: int, n_val: int) -> str:
        return (f"profile {self.name}: {n_train:,} training images, {self.epochs} epochs per trial, "
                f"{n_val:,} validation images for selection")


PROFILES = {"gpu": Profile("gpu (full data, full schedule)", None, 15),
            "cpu": Profile("cpu-quick (training subset, few epochs)", 8000, 4)}


def pick_profile(device: torch.device, epochs: int | None = None) -> Profile:
    """GPU: the whole training split and a full schedule; CPU: a quick profile for a laptop."""
    base = PROFILES["gpu" if device.type == "cuda" else "cpu"]
    return dataclasses.replace(base, epochs=epochs or base.epochs)


@dataclass
class SearchConfig:
    objectives: tuple[str, ...] = ("acc", "params")
    trials: int = 100
    epochs: int = 4
    max_params: int | None = None
    max_flops: int | None = None
    timeout: float | None = None
    seed: int = 0
    precision: str = "auto"
    compile: bool = False
    max_skips: int = 200        # consecutive free skips before giving up on the space
    pruner: str = "pareto"
    prune_factor: int = 3
    prune_min_trials: int = 5
    prune_margin: float | None = 0.01  # None: MOASHA's rule alone
    rung_min_images: int = 2000


def counts_toward_trials(t: FrozenTrial) -> bool:
    """Sampled candidates that were trained (finished or pruned); seeds and skips come on top."""
    return (t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "skipped" not in t.user_attrs
            and "preset" not in t.user_attrs)


def enqueue_seeds(study: optuna.Study) -> list[str]:
    """Queue each seed preset not yet in the study: the references trained under the same budget."""
    present = {t.user_attrs.get("preset") for t in study.get_trials(deepcopy=False)}
    queued = [p.name for p in zoo.PRESETS if p.name not in present]
    for name in queued:
        study.enqueue_trial({}, user_attrs={"preset": name}, skip_if_exists=False)
    return queued


class Skip(optuna.TrialPruned):
    """A candidate not trained: invalid, over budget, or a duplicate. Costs nothing."""


class Search:
    def __init__(self, study: optuna.Study, config: SearchConfig, data: fmnist.Splits,
                 out: Callable[[str], None] | None = None, progress: Progress | None = None,
                 store=None):
        self.study, self.config, self.data = study, config, data
        self.store = store  # where finished trials' weights go (an Optuna artifact store), or None
        self.progress = progress or Progress(enabled=False)
        self.out = out or self.progress.write
        self.current: int | None = None
        self.consecutive_skips = 0
        # Rungs compare the study's size objectives known before training; latency is measured
        # after it, so a study of accuracy and latency alone compares parameters in its place.
        costs = tuple(o for o in config.objectives if o in ("params", "flops")) or ("params",)
        self.pruner = (ParetoPruner(study, config.prune_factor, config.prune_min_trials,
                                    margin=config.prune_margin, costs=costs)
                       if config.pruner == "pareto" else None)

    # -- one trial ------------------------------------------------------------------------
    def candidate(self, trial: optuna.Trial) -> ModelSpec:
        preset = trial.user_attrs.get("preset")
        if preset:
            spec = zoo.get(preset)
            return dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=self.config.epochs))
        return sample(trial, self.config.epochs)

    def skip(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("skipped", reason)
        raise Skip(reason)

    def duplicate_of(self, spec_json: str, number: int) -> int | None:
        """An earlier trial of the same spec: finished, or in training elsewhere (the lower number
        wins, so two workers that drew the same seed or candidate at once train it once)."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.RUNNING)):
            if (t.number != number and "skipped" not in t.user_attrs and t.user_attrs.get("spec") == spec_json
                    and (t.state != TrialState.RUNNING or t.number < number)):
                return t.number
        return None

    def objective(self, trial: optuna.Trial) -> Sequence[float]:
        self.current = trial.number
        studies.mark_worker(trial)
        try:
            spec = self.candidate(trial)
        except SpecError as e:
            self.skip(trial, f"invalid: {e}")
        arch = spec.arch
        sizes = {"params": param_count(arch), "flops": flops(arch)}
        n_params, n_flops = sizes["params"], sizes["flops"]
        spec_json = spec.to_json()
        for key, value in {**sizes, "spec": spec_json}.items():
            trial.set_user_attr(key, value)
        cfg = self.config
        if cfg.max_params is not None and n_params > cfg.max_params:
            self.skip(trial, f"over --max-params ({n_params:,} > {cfg.max_params:,})")
        if cfg.max_flops is not None and n_flops > cfg.max_flops:
            self.skip(trial, f"over --max-flops ({n_flops:,} > {cfg.max_flops:,})")
        dup = self.duplicate_of(spec_json, trial.number)
        if dup is not None:
            self.skip(trial, f"duplicate of trial {dup}")

        model = build(arch, seed=cfg.seed)
        rungs = rung_images(len(self.data.train) * spec.train.epochs, cfg.prune_factor,
                            min_images=cfg.rung_min_images)
        hook = (self.pruner.hook(trial, sizes, rungs, protected="preset" in trial.user_attrs)
                if self.pruner else None)
        self.progress.trial_started(trial.number)
        result = fmnist.train(model, self.data, spec.train, seed=cfg.seed, precision=cfg.precision,
                              compile=cfg.compile, checkpoints=rungs if hook else (), on_report=hook,
                              on_progress=self.progress.trial_progress)
        self.record(trial, result)
        if result.stop_reason:  # pruned at a rung, or a non-finite loss
            trial.set_user_attr("pruned_reason", result.stop_reason)
            raise optuna.TrialPruned(result.stop_reason)
        if self.store is not None:
            save_weights(trial, model, self.store)
        values = {"acc": result.val_acc, **{k: float(v) for k, v in sizes.items()}}
        if "latency" in cfg.objectives:
            values["latency"] = fmnist.latency_ms(model, self.data.val.images[:1], cfg.precision)
            trial.set_user_attr("latency_ms", values["latency"])
        return [values[o] for o in cfg.objectives]

    def record(self, trial: optuna.Trial, result: fmnist.TrainResult) -> None:
        attrs = {
            "val_acc": result.val_acc, "test_acc": result.test_acc, "test_top5": result.test_top5,
            "curve": [[r.epoch, r.val_acc] for r in result.curve], "epochs_run": result.epochs_run,
            "images_seen": result.images_seen, "train_seconds": round(result.train_seconds, 3),
            "images_per_s": round(result.images_per_s, 1), "device": result.device,
            "precision": result.precision,
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    # -- the loop ---------------------------------------------------------------------------
    def done(self, trials: Sequence[FrozenTrial] | None = None) -> int:
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        return sum(counts_toward_trials(t) for t in trials)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.current = None
        skipped = "skipped" in trial.user_attrs
        self.consecutive_skips = self.consecutive_skips + 1 if skipped else 0
        self.out(describe_trial(trial))
        trials = study.get_trials(deepcopy=False)  # one read of the storage serves both counts
        done = self.done(trials)
        self.progress.trial_finished(study, trials, done, self.config.trials)
        if done >= self.config.trials:
            study.stop()
        elif self.consecutive_skips >= self.config.max_skips:
            self.out(f"stopping: the last {self.consecutive_skips} candidates were all skipped "
                     f"(budget too tight for the space?)")
            study.stop()

    def run(self) -> None:
        if self.done() >= self.config.trials:
            return
        try:
            self.study.optimize(self.objective, timeout=self.config.timeout, callbacks=[self.after_trial],
                                catch=())
        except KeyboardInterrupt:
            if self.current is not None:  # Optuna has marked it FAIL: queue its configuration again
                interrupted = self.study.get_trials(deepcopy=False)[self.current]
                if interrupted.state == TrialState.FAIL:
                    studies.retry(self.study, interrupted)
            raise
        finally:
            self.progress.close()


def describe_trial(t: FrozenTrial) -> str:
    """One line per trial for the log."""
    who = f"trial {t.number}" + (f" ({t.user_attrs['preset']})" if "preset" in t.user_attrs else "")
    params = t.user_attrs.get("params")
    size = f"{params:,} params" if params is not None else "no spec"
    if "skipped" in t.user_attrs:
        return f"{who}: skipped, {t.user_attrs['skipped']}"
    if t.state == TrialState.PRUNED:
        return f"{who}: {size}, pruned: {t.user_attrs.get('pruned_reason', 'pruned')}"
    if t.state != TrialState.COMPLETE:
        return f"{who}: {t.state.name.lower()}"
    a = t.user_attrs
    return (f"{who}: {size}, val {100 * a['val_acc']:.2f}%, test {100 * a['test_acc']:.2f}%, "
            f"{a['epochs_run']:g} epochs, {a['train_seconds']:.1f} s")
