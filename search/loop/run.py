"""Running a study: the profile, the objective of one trial, progress, and when to stop.

A trial: sample (or take an enqueued seed preset) -> count params and FLOPs -> skip at no cost if
over budget, invalid or already trained -> train on the device-resident split -> record
everything as user attributes -> return the objectives. Selection is on validation accuracy;
test accuracy is recorded beside it and never returned to the sampler.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import fmnist
from fmnist.errors import SpecError
from space import ModelSpec, build, flops, inference_bytes, param_count, summary, training_bytes, zoo
from space.sample import WARM_STARTS, fixed, sample

from search import signals
from search.loop.prune import ParetoPruner, rung_images, rung_val_size
from search.study import claims, optuna_api, reclaim, record, rescue as keep
from search.view import dashboard, hypervolume
from search.view.progress import Progress
from search.view.table import pct


@dataclass(frozen=True)
class Profile:
    """What a trial that reaches the top rung is trained on: the model as shipped."""
    name: str
    epochs: int                   # top rung: the whole training split, this many epochs
    max_flops: int | None         # candidates above this are skipped at no cost

    def describe(self, n_train: int, n_val: int, rungs: list[int]) -> str:
        ladder = ", ".join(f"{r:,}" for r in rungs)
        return (f"profile {self.name}: top rung {n_train:,} training images x {self.epochs} epochs "
                f"= {n_train * self.epochs:,} images; rungs at {ladder or 'none'}; "
                f"{n_val:,} validation images for selection")


# Without --timeout, a CPU skips candidates above 64 MFLOPs (ResNet-style nets of 16-32-64 channels
# and three blocks a stage fit); with one, a candidate is skipped when its top-rung training alone
# would take more than TOP_SECONDS_SHARE of it (estimated from its FLOPs and the measured rate).
PROFILES = {"cuda": Profile("gpu", 20, None), "cpu": Profile("cpu", 10, 64_000_000)}
TOP_SECONDS_SHARE = 1 / 4
MAX_EPOCHS = {"cuda": 40, "cpu": 15}
# With --timeout, one top-rung training of the reference net takes about this fraction of it:
# the ladder below the top costs about as much again per rung, and the front wants several models.
TOP_RUNG_SHARE = 16


def pick_profile(device: torch.device, epochs: int | None = None, timeout: float | None = None,
                 n_train: int = 50_000, rate: Callable[[], float] | None = None) -> Profile:
    """The top rung's epochs: --epochs, else sized so --timeout holds about TOP_RUNG_SHARE top-rung
    trainings at the measured ``rate`` (images/s of the reference net), else the device's default."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    base = PROFILES[kind]
    if epochs is None and timeout is not None and rate is not None:
        epochs = max(1, min(MAX_EPOCHS[kind], round(rate() * timeout / TOP_RUNG_SHARE / max(1, n_train))))
    return dataclasses.replace(base, epochs=epochs or base.epochs)


def reference_arch():
    """The mid-sized net of the stages space whose training speed sizes budgets."""
    return fixed(WARM_STARTS[3]).arch


def reference_rate(data: fmnist.Splits, precision: str, seed: int = 0) -> float:
    """Training images/s of a mid-sized net of the stages space on this device, briefly measured."""
    return measure_rate(fixed(WARM_STARTS[3]), data, precision, seed)


def measure_rate(spec: ModelSpec, data: fmnist.Splits, precision: str, seed: int = 0, steps: int = 24) -> float:
    """Training images/s of ``spec`` on the device ``data`` is on, briefly measured (a second run,
    after one that chooses kernels and fills caches)."""
    bs = min(spec.train.batch_size, len(data.train))
    n = min(len(data.train), bs * steps)
    no_val = fmnist.Split(data.val.images[:0], data.val.labels[:0])  # training speed alone
    probe = fmnist.Splits(fmnist.Split(data.train.images[:n], data.train.labels[:n]), no_val, data.test)
    model = build(spec.arch, seed=seed)
    fmnist.train(model, probe, dataclasses.replace(spec.train, epochs=1), seed=seed, precision=precision,
                 every_epoch=False, evaluate_test=False)  # warm-up: kernels chosen, caches filled
    result = fmnist.train(model, probe, dataclasses.replace(spec.train, epochs=1), seed=seed,
                          precision=precision, every_epoch=False, evaluate_test=False)
    return result.images_per_s


@dataclass
class SearchConfig:
    objectives: tuple[str, ...] = ("acc", "params")
    trials: int = 100
    epochs: int = 10
    space: str = "stages"
    max_params: int | None = None
    max_flops: int | None = None
    profile_max_flops: int | None = None  # the device profile's cap; --max-flops replaces it
    flop_rate: float | None = None        # forward FLOPs x training images per second, measured here
    max_top_seconds: float | None = None  # skip a candidate whose top-rung training would take longer
    timeout: float | None = None
    seed: int = 0
    precision: str = "auto"
    compile: bool = False
    max_skips: int = 200        # consecutive free skips before giving up on the space
    pruner: str = "pareto"
    prune_factor: int = 3
    prune_min_trials: int = 5
    prune_margin: float | None = 0.01  # None: MOASHA's rule alone
    rung_min_images: int = 4000
    stop_flat: float | None = None  # --stop-when-flat: the fraction of the hypervolume (search.view.hypervolume)


def counts_toward_trials(t: FrozenTrial) -> bool:
    """Sampled candidates that were trained (finished or pruned); seeds and skips come on top."""
    return record.was_trained(t) and not record.is_seed(t)


def enqueue_seeds(study: optuna.Study) -> list[str]:
    """Queue each seed preset not yet in the study, cheapest first: candidates like any other,
    through the same rungs (the early trials decide what the rungs compare against)."""
    present = {t.user_attrs.get(record.PRESET) for t in study.get_trials(deepcopy=False)}
    queued = [p.name for p in sorted(zoo.PRESETS, key=lambda p: p.flops) if p.name not in present]
    for name in queued:
        study.enqueue_trial({}, user_attrs={record.PRESET: name}, skip_if_exists=False)
    return queued


def enqueue_warm_starts(study: optuna.Study) -> int:
    """Queue the stages space's warm starts not yet in the study; returns how many."""
    present = {t.user_attrs.get(record.WARM_START) for t in study.get_trials(deepcopy=False)}
    queued = 0
    for i, params in enumerate(WARM_STARTS):
        if i not in present:
            study.enqueue_trial(params, user_attrs={record.WARM_START: i}, skip_if_exists=False)
            queued += 1
    return queued


# The study's note and figures are rewritten after a trial when this long has passed since the
# last time (many trials pruned in seconds would rewrite them for nothing), and once at the end.
NOTES_EVERY_S = 20.0

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


class Skip(optuna.TrialPruned):
    """A candidate not trained: invalid, over budget, or a duplicate. Costs nothing."""


class Search:
    def __init__(self, study: optuna.Study, config: SearchConfig, data: fmnist.Splits,
                 out: Callable[[str], None] | None = None, progress: Progress | None = None,
                 store=None, notes: bool = True):
        self.study, self.config, self.data = study, config, data
        self.notes = notes  # optuna-dashboard's notes and plots, kept current as the study runs
        self.engine = optuna_api.engine(study)  # where candidates are claimed (None: an in-memory study)
        self.store = store  # where finished trials' weights go (an Optuna artifact store), or None
        self.progress = progress or Progress(enabled=False)
        self.out = out or self.progress.write
        self.current: int | None = None
        self.published = 0.0  # time.monotonic() of the last note and figures
        self.kept: keep.Kept | None = None  # the trial under way, with what it wrote
        self.stopping = False
        self.consecutive_skips = 0
        self.deadline: float | None = None
        self.rungs: list[int] = []
        self.rung_val: dict[int, fmnist.Split] = {}
        if data is not None:
            self.rungs = rung_images(len(data.train) * config.epochs, config.prune_factor, config.rung_min_images)
            # One fixed validation subset per rung, sized for its decision; the top rung uses them all.
            self.rung_val = {r: data.val_subset(rung_val_size(i), config.seed) for i, r in enumerate(self.rungs)}
        # Rungs compare the study's size objectives known before training; latency is measured
        # after it, so a study of accuracy and latency alone compares parameters in its place.
        costs = tuple(o for o in config.objectives if o in ("params", "flops")) or ("params",)
        self.pruner = (ParetoPruner(study, config.prune_factor, config.prune_min_trials,
                                    margin=config.prune_margin, costs=costs)
                       if config.pruner == "pareto" else None)

    # -- one trial ------------------------------------------------------------------------
    def candidate(self, trial: optuna.Trial) -> ModelSpec:
        preset = trial.user_attrs.get(record.PRESET)
        if preset:
            spec = zoo.get(preset)
            return dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=self.config.epochs))
        return sample(trial, self.config.epochs, self.config.space)

    def skip(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(record.SKIPPED, reason)
        raise Skip(reason)

    def duplicate_of(self, spec_json: str, number: int) -> int | None:
        """An earlier trial of the same spec: finished, or in training elsewhere (the lower number
        wins, so two workers that drew the same seed or candidate at once train it once)."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.RUNNING)):
            if (t.number != number and not record.is_skipped(t) and canonical(record.spec_text(t)) == spec_json
                    and (t.state != TrialState.RUNNING or t.number < number)):
                return t.number
        return None

    def released(self, number: int) -> bool:
        """Whether trial ``number`` gave up its claim on a candidate: it failed (its worker died)."""
        return self.study.get_trials(deepcopy=False)[number].state == TrialState.FAIL

    def objective(self, trial: optuna.Trial) -> Sequence[float]:
        """One trial, and what it leaves for people: its outcome as a column, a one-line note."""
        kept = self.kept = keep.Kept(trial)
        try:
            values = self.evaluate(kept)
        except optuna.TrialPruned:
            kept.end(TrialState.PRUNED)
            self.tell_people(kept, "skipped" if record.SKIPPED in kept.user_attrs else "pruned")
            raise
        except optuna.exceptions.UpdateFinishedTrialError:  # failed under us while it was sampled
            kept.lost = True
            raise
        kept.end(TrialState.COMPLETE, values)
        # before it is told: a finished trial's attributes cannot change
        kept.set_user_attr(record.HV_GAIN, round(hypervolume.trial_gain(
            self.study.get_trials(deepcopy=False), kept.user_attrs, hypervolume.reference(self.study)), 6))
        self.tell_people(kept, "complete")
        return values

    def tell_people(self, trial: keep.Kept, outcome: str) -> None:
        trial.set_user_attr(record.OUTCOME, outcome)
        if self.notes and not trial.lost:
            dashboard.publish_trial(trial, outcome)

    def evaluate(self, trial: keep.Kept) -> Sequence[float]:
        self.current = trial.number
        reclaim.mark_worker(trial)
        try:
            spec = self.candidate(trial)
        except SpecError as e:
            self.skip(trial, f"invalid: {e}")
        arch = spec.arch
        sizes = {"params": param_count(arch), "flops": flops(arch)}
        n_params, n_flops = sizes["params"], sizes["flops"]
        spec_json = spec.to_json(compact=True)
        trial.set_system_attr(record.SPEC, spec_json)
        for key, value in {record.PARAMS: n_params, record.FLOPS: n_flops, record.SUMMARY: summary(arch)}.items():
            trial.set_user_attr(key, value)
        cfg = self.config
        if cfg.max_params is not None and n_params > cfg.max_params:
            self.skip(trial, f"over --max-params ({n_params:,} > {cfg.max_params:,})")
        if cfg.max_flops is not None and n_flops > cfg.max_flops:
            self.skip(trial, f"over --max-flops ({n_flops:,} > {cfg.max_flops:,})")
        if cfg.max_flops is None and cfg.profile_max_flops is not None and n_flops > cfg.profile_max_flops:
            # A seed skipped here loses nothing: the front is compared with its reported figures.
            self.skip(trial, f"over the profile's {cfg.profile_max_flops / 1e6:g} MFLOPs "
                             f"({n_flops / 1e6:.1f}; --max-flops to change)")
        bs = min(spec.train.batch_size, len(self.data.train))
        budget = len(self.data.train) // bs * bs * spec.train.epochs  # the top rung: images at the end
        if cfg.max_flops is None and cfg.max_top_seconds and cfg.flop_rate:
            top = budget * n_flops / cfg.flop_rate
            if top > cfg.max_top_seconds:
                self.skip(trial, f"its top-rung training would take about {top / 60:.0f} min here, over "
                                 f"{cfg.max_top_seconds / 60:.0f} min (a quarter of --timeout; --max-flops to change)")
        big = too_big(arch, bs, self.data.train.images.device)
        if big:
            self.skip(trial, f"too large for this machine: {big}")
        dup = self.duplicate_of(spec_json, trial.number)
        if dup is None and self.engine is not None:  # the check above can race; the claim cannot
            dup = claims.claim(self.engine, optuna_api.study_id(self.study), spec_json, trial.number, self.released)
        if dup is not None:
            self.skip(trial, f"duplicate of trial {dup}")

        model = build(arch, seed=cfg.seed)
        preset = zoo.preset(trial.user_attrs[record.PRESET]) if record.PRESET in trial.user_attrs else None
        reported = preset.reported_acc / 100 if preset and preset.reported_acc is not None else None
        hook = (self.pruner.hook(trial, sizes, self.rungs, budget, self.deadline, reported,
                                 warm_start=record.WARM_START in trial.user_attrs, family=record.family(trial.user_attrs))
                if self.pruner else None)
        self.progress.trial_started(trial.number)
        result = fmnist.train(model, self.data, spec.train, seed=cfg.seed, precision=cfg.precision,
                              compile=cfg.compile, checkpoints=self.rung_val if hook else {},
                              every_epoch=False, on_report=hook, on_progress=self.progress.trial_progress)
        self.record(trial, result)
        if result.stop_reason:  # pruned at a rung, or a non-finite loss
            trial.set_user_attr(record.PRUNED_REASON, result.stop_reason)
            raise optuna.TrialPruned(result.stop_reason)
        if self.store is not None:
            trial.save_weights(model, self.store)
        values = {"acc": result.val_acc, **{k: float(v) for k, v in sizes.items()}}
        if "latency" in cfg.objectives:
            values["latency"] = fmnist.latency_ms(model, self.data.val.images[:1], cfg.precision)
            trial.set_user_attr(record.LATENCY_MS, values["latency"])
        return [values[o] for o in cfg.objectives]

    def record(self, trial: keep.Kept, result: fmnist.TrainResult) -> None:
        attrs = {
            record.VAL_ACC: result.val_acc, record.TEST_ACC: result.test_acc, record.TEST_TOP5: result.test_top5,
            record.CURVE: [[r.epoch, round(r.val_acc, 4)] for r in result.curve if r.val_acc is not None],
            record.EPOCHS_RUN: result.epochs_run, record.IMAGES_SEEN: result.images_seen,
            record.TRAIN_SECONDS: round(result.train_seconds, 3), record.EVAL_SECONDS: round(result.eval_seconds, 3),
            record.IMAGES_PER_S: round(result.images_per_s, 1), record.DEVICE: result.device,
            record.PRECISION: result.precision,
        }
        for key, value in attrs.items():
            if value is not None:  # a missing figure is absent, not None: the dashboard sorts numbers
                trial.set_user_attr(key, value)

    # -- the loop ---------------------------------------------------------------------------
    def done(self, trials: Sequence[FrozenTrial] | None = None) -> int:
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        return sum(counts_toward_trials(t) for t in trials)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.current = None
        skipped = record.is_skipped(trial)
        self.consecutive_skips = self.consecutive_skips + 1 if skipped else 0
        self.out(describe_trial(trial))
        trials = study.get_trials(deepcopy=False)  # one read of the storage serves both counts
        done = self.done(trials)
        self.progress.trial_finished(study, trials, done, self.config.trials)
        # A worker of this machine killed mid-trial: its trial is failed and queued again now, not
        # when a worker next starts (another machine's is found by its missed heartbeat).
        for number in reclaim.reclaim_orphans(study, optuna_api.storage(study)):
            self.out(f"trial {number} was left running by a worker that is gone: its configuration is queued again")
        if self.notes and time.monotonic() - self.published >= NOTES_EVERY_S:
            self.publish(trials)
        if done >= self.config.trials:
            self.stop()
        elif self.consecutive_skips >= self.config.max_skips:
            self.out(f"stopping: the last {self.consecutive_skips} candidates were all skipped "
                     f"(budget too tight for the space?)")
            self.stop()
        elif self.config.stop_flat is not None:
            why = hypervolume.flat(hypervolume.history(trials, hypervolume.reference(study)), self.config.stop_flat,
                                   sum(record.was_trained(t) for t in trials))
            if why:
                self.out(f"stopping: {why}")
                study.set_user_attr(record.STOPPED, why)
                self.stop()

    def publish(self, trials: Sequence[FrozenTrial] | None = None) -> None:
        """The study's note and figures for the dashboard, as the study stands now."""
        dashboard.publish_study(self.study, trials)
        self.published = time.monotonic()

    def stop(self) -> None:
        self.stopping = True
        self.study.stop()

    def time_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def after_lost_trial(self) -> None:
        """The trial under way was failed by another worker (its heartbeat was silent too long,
        this worker paused): its configuration is queued again, and its result, if it has one, kept."""
        kept, self.kept, self.current = self.kept, None, None
        successor = keep.keep(self.study, kept, self.store)
        why = f"trial {kept.number} was failed as stale by another worker while this one was paused"
        if successor is None:
            self.out(f"{why}; its configuration is queued again")
            return
        self.out(f"{why}; its result is kept as trial {successor.number}")
        self.after_trial(self.study, successor)

    def run(self) -> None:
        if self.done() >= self.config.trials:
            return
        if self.config.timeout is not None:
            self.deadline = time.monotonic() + self.config.timeout
        if self.notes:
            self.publish()  # the budget and the front so far, from the start
        self.stopping = False
        watch = reclaim.watch_stale(self.study, self.out) if self.engine is not None else None
        try:
            while not self.stopping and self.time_left() != 0:
                try:
                    self.study.optimize(self.objective, timeout=self.time_left(), callbacks=[self.after_trial],
                                        catch=())
                    return
                except Exception:
                    # Optuna cannot tell a trial that another worker failed meanwhile, and stops.
                    if self.kept is None or not self.kept.was_failed_under_us():
                        raise
                    self.after_lost_trial()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (search.signals): one path for both
            reclaim.release(self.study, self.current)
            raise
        finally:
            if watch is not None:
                watch.set()
            self.progress.close()
            if self.notes:  # the last word is current, whatever ended the run (deadline, total, a signal)
                with signals.held():
                    self.publish()


def describe_trial(t: FrozenTrial) -> str:
    """One line per trial for the log."""
    who = f"trial {t.number}" + (f" ({t.user_attrs[record.PRESET]})" if record.is_seed(t) else "")
    params = t.user_attrs.get(record.PARAMS)
    size = f"{params:,} params" if params is not None else "no spec"
    if record.is_skipped(t):
        return f"{who}: skipped, {t.user_attrs[record.SKIPPED]}"
    if t.state == TrialState.PRUNED:
        return f"{who}: {size}, pruned: {t.user_attrs.get(record.PRUNED_REASON, 'pruned')}"
    if t.state != TrialState.COMPLETE:
        return f"{who}: {t.state.name.lower()}"
    a = t.user_attrs
    return (f"{who}: {size}, val {pct(a[record.VAL_ACC])}, test {pct(a.get(record.TEST_ACC))}, "
            f"{a[record.EPOCHS_RUN]:g} epochs, {a[record.TRAIN_SECONDS]:.1f} s")
