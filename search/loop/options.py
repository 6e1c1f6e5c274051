"""The study options a user types, checked and turned into values: objectives, sampler, names."""
from __future__ import annotations

import optuna

from fmnist.errors import UsageError

from search.study.record import OBJECTIVES

DEFAULT_STUDY = "fmnist"

SAMPLERS = ("tpe", "nsga2", "random")
MAX_NAME = 128


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    valid = ", ".join(OBJECTIVES)
    if not names:
        raise UsageError(f"--objective: name at least one of {valid}")
    for n in names:
        if n not in OBJECTIVES:
            raise UsageError(f"--objective: unknown objective {n!r} (valid: {valid})")
    if len(set(names)) != len(names):
        raise UsageError(f"--objective: {text!r} names an objective twice")
    return names


def worker_seed(seed: int, worker_id: int) -> int:
    """The sampler's seed for one worker: its own stream of candidates, the same one on every rerun.
    Worker 0 keeps ``seed`` itself, so a single worker's study is what it always was."""
    return seed if worker_id == 0 else (seed + 1_000_003 * worker_id) % 2**32


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # Multi-objective TPE is univariate by default; multivariate with groups models the
        # conditional space (block i's parameters exist only in deeper nets) jointly.
        return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UsageError(f"--sampler: must be one of {', '.join(SAMPLERS)}, got {name!r}")


def check_name(name: str) -> str:
    """A study name a person can type and see: not empty, printable, at most MAX_NAME characters."""
    if not name.strip():
        raise UsageError("--study: the name is empty")
    if len(name) > MAX_NAME:
        raise UsageError(f"--study: the name is {len(name):,} characters long; at most {MAX_NAME}")
    if not name.isprintable():
        raise UsageError(f"--study {name!r}: the name holds control characters")
    return name


def folder_safe(name: str) -> str:
    """``name`` as one folder name (the default export folder is exports/NAME)."""
    if name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"--study {name!r}: not usable as a folder name under exports/; give --out")
    return name
