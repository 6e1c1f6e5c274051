"""What a trial and a study store: the names of their user attributes, one home for a data contract.

These attributes live in users' databases and are read back by later releases, by the dashboard
and by people, so they are named here once and nowhere else. A study carries the version of this
schema it was written with (``SCHEMA_VERSION``); a study written by a newer one is refused rather
than misread. Version 1: everything in user attributes (studies from before versioning read as
it). Version 2: the spec moved to the trial's system attributes (``spec_text`` reads either),
since optuna-dashboard shows every user attribute as a table column and a spec made each row a
column of many lines.

Trial attributes (absent, never None, where there is no figure: the dashboard sorts numbers):
  identity   params, flops, summary (the network in one line), preset (a seed model's name),
             warm_start (index), worker (host:pid training it); in system attributes: fmnist:spec
             (ModelSpec JSON, one line, defaults left out; a user attribute ``spec`` in version 1)
  outcome    outcome (complete / pruned / skipped: a column to sort and filter by), skipped (why it
             was not trained), pruned_reason, pruned_rung (images seen when stopped)
  figures    val_acc, test_acc, test_top5, curve ([[epoch, val_acc], ...]), epochs_run, images_seen,
             train_seconds, eval_seconds, images_per_s, device, precision, latency_ms
  rungs      rung_<images>: validation accuracy at that many training images seen (``rung_key``)
  weights    weights_artifact (the weights' artifact id)
  front      hv_gain (how much the trial raised the validation hypervolume of the finished trials
             when it finished: 0 when it did not enter the front; ``search.view.hypervolume``)
  history    kept_from (the trial this result was first recorded under: another worker failed it as
             stale while its worker was paused, not dead; ``search.study.rescue``)
  retries    in system attributes: failed_trial, retry_history (a configuration queued again after
             its trial died; ``search.study.reclaim``)
Study attributes: budget (the contract every worker trains under: ``Budget``), objectives (what
each value measures), schema (``SCHEMA_VERSION``), hv_reference (the hypervolume's reference point,
fixed when the study is created), stopped (why --stop-when-flat ended it); in system attributes:
fmnist:created_by (the marker that tells our studies from another tool's), fmnist:weights_folder
(``WeightsFolder``: the token file every worker's --artifact-dir must hold, and where the first
worker's folder was), fmnist:final:<trial number> (export-best --retrain's final training).
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from fmnist.errors import UsageError

from search.study import optuna_api

SCHEMA_VERSION = 2

# -- trial attributes --------------------------------------------------------------------------
PARAMS, FLOPS, SUMMARY = "params", "flops", "summary"
SPEC = "fmnist:spec"  # a system attribute (version 2)
SPEC_V1 = "spec"      # the user attribute of version 1
PRESET, WARM_START, WORKER = "preset", "warm_start", "worker"
OUTCOME, SKIPPED, PRUNED_REASON, PRUNED_RUNG = "outcome", "skipped", "pruned_reason", "pruned_rung"
VAL_ACC, TEST_ACC, TEST_TOP5, CURVE = "val_acc", "test_acc", "test_top5", "curve"
EPOCHS_RUN, IMAGES_SEEN, TRAIN_SECONDS, EVAL_SECONDS = "epochs_run", "images_seen", "train_seconds", "eval_seconds"
IMAGES_PER_S, DEVICE, PRECISION, LATENCY_MS = "images_per_s", "device", "precision", "latency_ms"
WEIGHTS = "weights_artifact"
KEPT_FROM = "kept_from"
FINAL_PREFIX = "fmnist:final:"  # a study system attribute per retrained trial: fmnist:final:<number>
HV_GAIN = "hv_gain"  # how much the trial raised the front's validation hypervolume (0: not on the front)
RUNG_PREFIX = "rung_"
FAILED_TRIAL, RETRY_HISTORY = "failed_trial", "retry_history"  # system attributes of a retried configuration


class Outcome(str, enum.Enum):
    """What became of a trial that ended, as its ``outcome`` attribute says (Optuna records a
    skipped candidate as PRUNED: the attribute tells them apart)."""
    COMPLETE = "complete"
    PRUNED = "pruned"
    SKIPPED = "skipped"


# Every kind of trial in a study, in the order counts are shown (``kind``).
KINDS = ("complete", "pruned", "skipped", "failed", "running", "waiting")

# -- study attributes --------------------------------------------------------------------------
BUDGET, OBJECTIVE_MEANINGS, SCHEMA = "budget", "objectives", "schema"
HV_REFERENCE = "hv_reference"  # {error, params}: the hypervolume's reference point, fixed at creation
# ... and its value: 30% error at 5M parameters (every model worth a place on a front is inside it)
HV_REFERENCE_POINT = {"error": 0.30, "params": 5_000_000}
STOPPED = "stopped"            # why --stop-when-flat ended the study
WEIGHTS_FOLDER = "fmnist:weights_folder"  # a system attribute
CREATED_BY = "fmnist:created_by"          # a system attribute, written when the study is created
CLAIMS_TABLE = "fmnist_claims"            # our one table beside Optuna's (search.study.claims)

@dataclass(frozen=True)
class Budget:
    """The contract every worker of a study trains under (the study attribute ``budget``)."""
    epochs: int                     # the top rung: the whole training split, this many epochs
    train_images: int
    val_images: int
    split_seed: int | None = None   # absent from the earliest budgets
    space: str = "blocks"           # absent from studies written before spaces were recorded
    profile: str = ""               # cpu or gpu; absent from the earliest studies
    train_subset: int | None = None  # --train-subset, when one was given
    # Seconds to train one image, fixed and per forward FLOP (search.loop.plan.Pace), where a timed
    # search measured it: a rerun and the other workers size cheap nets' epochs with the same figures.
    pace: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Budget | None":
        """The stored budget (None for a study without one, or one this release cannot read)."""
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d}) if d else None
        except TypeError:  # a required key missing
            return None

    def describe(self) -> str:
        """The budget every trial of the study was trained with, in a sentence."""
        profile = f"; {self.profile} profile" if self.profile else ""
        return (f"every trial that was not stopped early trained on {self.train_images:,} images for "
                f"{self.epochs} epochs (the top rung{profile}); selection on {self.val_images:,} "
                f"validation images (split seed {'not recorded' if self.split_seed is None else self.split_seed}); "
                f"space {self.space}")


def describe_budget(stored: dict | None) -> str:
    budget = Budget.from_dict(stored)
    return budget.describe() if budget else "budget: not recorded (a study from before budgets were stored)"


@dataclass(frozen=True)
class WeightsFolder:
    """Where a study's weights are (the study system attribute ``fmnist:weights_folder``): the token
    whose file every worker's --artifact-dir must hold, and the first worker's host:folder."""
    token: str
    where: str

    def file_name(self) -> str:
        return f".fmnist-study-{self.token}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "WeightsFolder | None":
        return cls(d["token"], d["where"]) if isinstance(d, dict) and "token" in d and "where" in d else None


# What a study may optimize: name -> (direction, what it measures); the metric names of our studies.
OBJECTIVES = {
    "acc": ("maximize", "validation accuracy"),
    "params": ("minimize", "trainable parameters"),
    "flops": ("minimize", "FLOPs per image, forward"),
    "latency": ("minimize", "measured inference ms per image"),
}

# The attribute holding each objective's value on a trial (acc is selected on validation accuracy).
OBJECTIVE_ATTR = {"acc": VAL_ACC, "params": PARAMS, "flops": FLOPS, "latency": LATENCY_MS}


def rung_key(images: int) -> str:
    return f"{RUNG_PREFIX}{images}"


def rungs_of(t: FrozenTrial) -> dict[int, float]:
    """The trial's validation accuracy at each rung it reached, by images seen."""
    return {int(k[len(RUNG_PREFIX):]): v for k, v in t.user_attrs.items()
            if k.startswith(RUNG_PREFIX) and k[len(RUNG_PREFIX):].isdigit()}


def worker_of(t: FrozenTrial) -> tuple[str, int | None]:
    """(host, pid) of the worker that trained or is training the trial; ("", None) where unknown."""
    host, _, pid = str(t.user_attrs.get(WORKER, "")).rpartition(":")
    return host, int(pid) if pid.isdigit() else None


def family(attrs: dict) -> str:
    """A trial's network family from its one-line summary: "residual" when it has a skip
    connection (a ``[...]`` span), else "plain"; "" for a trial without a summary."""
    text = attrs.get(SUMMARY)
    return "" if text is None else "residual" if "[" in str(text) else "plain"


def is_skipped(t: FrozenTrial) -> bool:
    """Not trained: invalid, over a budget, too large or a duplicate (Optuna records it as pruned)."""
    return SKIPPED in t.user_attrs


def is_seed(t: FrozenTrial) -> bool:
    """One of the seed projects' models, enqueued by name."""
    return PRESET in t.user_attrs


def was_trained(t: FrozenTrial) -> bool:
    """Trained to the end or to a rung where it was pruned."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not is_skipped(t)


def spec_text(t: FrozenTrial) -> str | None:
    """The trial's ModelSpec as JSON, wherever its schema version keeps it; None if it has none."""
    return t.system_attrs.get(SPEC) or t.user_attrs.get(SPEC_V1)


def set_spec(trial: optuna.Trial, text: str) -> None:
    optuna_api.set_trial_system_attr(trial, SPEC, text)


def is_ours(t: FrozenTrial) -> bool:
    """Written by this tool: it carries the spec and its size (another tool's trials do not)."""
    return spec_text(t) is not None and PARAMS in t.user_attrs and FLOPS in t.user_attrs


def keep_final(study: optuna.Study, number: int, figures: dict) -> None:
    """The final training's figures for trial ``number``, where show and the notes find them (a
    study attribute: Optuna does not let a finished trial's attributes change)."""
    optuna_api.set_study_system_attr(study, f"{FINAL_PREFIX}{number}", figures)


def finals(study: optuna.Study) -> dict[int, dict]:
    """The final training's figures of every retrained trial, by trial number."""
    return {int(k[len(FINAL_PREFIX):]): v for k, v in optuna_api.study_system_attrs(study).items()
            if k.startswith(FINAL_PREFIX) and k[len(FINAL_PREFIX):].isdigit() and isinstance(v, dict)}


def is_our_study(study: optuna.Study) -> bool:
    """Created by fmnist-search: it carries the marker written at creation, or (a study of a
    release before the marker) our budget record or a trial of ours. Another tool's study with the
    same name, directions and metric names has none of these."""
    if CREATED_BY in optuna_api.study_system_attrs(study):
        return True
    if Budget.from_dict(study.user_attrs.get(BUDGET)) is not None:
        return True
    return any(is_ours(t) for t in study.get_trials(deepcopy=False))


def mark_ours(study: optuna.Study) -> None:
    if CREATED_BY not in optuna_api.study_system_attrs(study):
        optuna_api.set_study_system_attr(study, CREATED_BY, {"tool": "fmnist-search"})


def kind(t: FrozenTrial) -> str:
    """What became of the trial, in a word: complete, pruned, skipped, failed, running or waiting."""
    if is_skipped(t):
        return Outcome.SKIPPED.value
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
            TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[t.state]


def check_schema(study_name: str, attrs: dict) -> None:
    """Refuse a study written by a newer release: its records may mean something this one misreads."""
    version = attrs.get(SCHEMA, SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UsageError(f"study {study_name!r} was written by a newer fmnist-search (record schema "
                         f"{version}; this release reads up to {SCHEMA_VERSION}); upgrade fmnist-search")
