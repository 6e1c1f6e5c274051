"""The study loop: trials one after another until the total, the deadline, an interrupt or the
stopping rule ends it, with what each leaves for people (a line, its note, the study's note).

One trial is ``search.loop.trial``'s pipeline; this module runs it under Optuna (``objective``
maps the pipeline's ending to Optuna's terms, in one place), keeps the study's notes current, and
looks after the trials that die (``search.study.reclaim``) or are failed under a paused worker
(``search.study.rescue``).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

import fmnist
from space import zoo

from search import signals
from search.loop.plan import Plan
from search.loop.prune import ParetoPruner, rung_images, rung_val_size
from search.loop.trial import Ending, Pipeline, canonical, claim_in
from search.study import optuna_api, reclaim, record, rescue
from search.study.record import Outcome
from search.study.rescue import TrialWriter
from search.view import dashboard, hypervolume
from search.view.progress import Progress
from search.view.table import pct

# The study's note and figures are rewritten after a trial when this long has passed since the
# last time (many trials pruned in seconds would rewrite them for nothing), and once at the end.
NOTES_EVERY_S = 20.0


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
    from space.sample import WARM_STARTS
    present = {t.user_attrs.get(record.WARM_START) for t in study.get_trials(deepcopy=False)}
    queued = 0
    for i, params in enumerate(WARM_STARTS):
        if i not in present:
            study.enqueue_trial(params, user_attrs={record.WARM_START: i}, skip_if_exists=False)
            queued += 1
    return queued


class Search:
    def __init__(self, study: optuna.Study, plan: Plan, data: fmnist.Splits,
                 out: Callable[[str], None] | None = None, progress: Progress | None = None,
                 store=None, notes: bool = True):
        self.study, self.plan, self.data = study, plan, data
        self.notes = notes  # optuna-dashboard's notes and plots, kept current as the study runs
        self.engine = optuna_api.engine(study)  # where candidates are claimed (None: an in-memory study)
        self.store = store  # where finished trials' weights go (an Optuna artifact store), or None
        self.progress = progress or Progress(enabled=False)
        self.out = out or self.progress.write
        self.current: int | None = None
        self.published = 0.0  # time.monotonic() of the last note and figures
        self.writer: TrialWriter | None = None  # the trial under way, with what it wrote
        self.stopping = False
        self.consecutive_skips = 0
        self.deadline: float | None = None
        self.rungs: list[int] = []
        rung_val: dict[int, fmnist.Split] = {}
        if data is not None:
            self.rungs = rung_images(len(data.train) * plan.epochs, plan.prune_factor, plan.rung_min_images)
            # One fixed validation subset per rung, sized for its decision; the top rung uses them all.
            rung_val = {r: data.val_subset(rung_val_size(i), plan.seed) for i, r in enumerate(self.rungs)}
        # Rungs compare the study's size objectives known before training; latency is measured
        # after it, so a study of accuracy and latency alone compares parameters in its place.
        cost_names = tuple(o for o in plan.objectives if o in ("params", "flops")) or ("params",)
        self.pruner = (ParetoPruner(study, plan.prune_factor, plan.prune_min_trials, margin=plan.prune_margin,
                                    cost_names=cost_names) if plan.pruner == "pareto" else None)
        claim = (claim_in(self.engine, optuna_api.study_id(study), self.released)
                 if self.engine is not None else None)
        self.pipeline = Pipeline(plan, data, self.duplicate_of, claim, self.hook, rung_val, store,
                                 self.progress.trial_started, self.progress.trial_progress)

    # -- one trial ------------------------------------------------------------------------
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

    def hook(self, writer: TrialWriter, sizes: dict[str, int], top: int):
        """The pruner's view of this trial at each rung (None without a pruner)."""
        if self.pruner is None:
            return None
        preset = zoo.preset(writer.user_attrs[record.PRESET]) if record.PRESET in writer.user_attrs else None
        reported = preset.reported_acc / 100 if preset and preset.reported_acc is not None else None
        return self.pruner.hook(writer, sizes, self.rungs, top, self.deadline, reported,
                                warm_start=record.WARM_START in writer.user_attrs,
                                family=record.family(writer.user_attrs))

    def objective(self, trial: optuna.Trial) -> Sequence[float]:
        """One trial under Optuna: the pipeline's ending in Optuna's terms (a skipped candidate is
        a PRUNED trial with the ``skipped`` attribute), and what it leaves for people."""
        writer = self.writer = TrialWriter(trial)
        self.current = trial.number
        try:
            reclaim.mark_worker(writer)
            ending = self.pipeline.run(writer)
        except optuna.exceptions.UpdateFinishedTrialError:  # failed under us while it was sampled
            writer.lost = True
            raise
        if ending.outcome != Outcome.COMPLETE:
            writer.end(TrialState.PRUNED)
            self.tell_people(writer, ending)
            raise optuna.TrialPruned(ending.reason)
        writer.end(TrialState.COMPLETE, ending.values)
        # before it is told: a finished trial's attributes cannot change
        writer.set_user_attr(record.HV_GAIN, round(hypervolume.trial_gain(
            self.study.get_trials(deepcopy=False), writer.user_attrs, hypervolume.reference(self.study)), 6))
        self.tell_people(writer, ending)
        return ending.values

    def tell_people(self, writer: TrialWriter, ending: Ending) -> None:
        writer.set_user_attr(record.OUTCOME, ending.outcome.value)
        if self.notes and not writer.lost:
            dashboard.publish_trial(writer.trial, writer.user_attrs, ending.outcome.value)

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
        self.progress.trial_finished(study, trials, done, self.plan.trials)
        # A worker of this machine killed mid-trial: its trial is failed and queued again now, not
        # when a worker next starts (another machine's is found by its missed heartbeat).
        for number in self.reclaim():
            self.out(f"trial {number} was left running by a worker that is gone: its configuration is queued again")
        if self.notes and time.monotonic() - self.published >= NOTES_EVERY_S:
            self.publish(trials)
        if done >= self.plan.trials:
            self.stop()
        elif self.consecutive_skips >= self.plan.max_skips:
            self.out(f"stopping: the last {self.consecutive_skips} candidates were all skipped "
                     f"(budget too tight for the space?)")
            self.stop()
        elif self.plan.stop_flat is not None:
            why = hypervolume.flat(hypervolume.history(trials, hypervolume.reference(study)), self.plan.stop_flat,
                                   sum(record.was_trained(t) for t in trials))
            if why:
                self.out(f"stopping: {why}")
                study.set_user_attr(record.STOPPED, why)
                self.stop()

    def reclaim(self) -> list[int]:
        """Trials left running by a worker of this machine that is gone: failed, queued again."""
        return reclaim.reclaim_orphans(self.study, optuna_api.storage(self.study))

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
        writer, self.writer, self.current = self.writer, None, None
        successor = rescue.rescue(self.study, writer, self.store)
        why = f"trial {writer.number} was failed as stale by another worker while this one was paused"
        if successor is None:
            self.out(f"{why}; its configuration is queued again")
            return
        self.out(f"{why}; its result is kept as trial {successor.number}")
        self.after_trial(self.study, successor)

    def run(self) -> None:
        if self.done() >= self.plan.trials:
            return
        if self.notes:
            self.publish()  # the budget and the front so far, from the start
        if self.plan.timeout is not None:  # after the first note: a short --timeout is the loop's, not the note's
            self.deadline = time.monotonic() + self.plan.timeout
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
                    if self.writer is None or not self.writer.was_failed_under_us():
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
