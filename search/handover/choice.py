"""Which trials ``export-best`` hands over: --trial numbers, the --top K, or the front.

Torch-free, so that a choice that fails (no such trial, nothing that small) is said before the
export loads anything.
"""
from __future__ import annotations

from typing import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from fmnist.errors import UsageError

from search.study import record
from search.view.front import describe_ties, front, ties


def select(study: optuna.Study, trials: Sequence[int] = (), max_params: int | None = None,
           top: int | None = None, by: str = "acc", leave_ties: bool = False,
           log: Callable[[str], None] = lambda line: None) -> list[FrozenTrial]:
    """The trials to export: --trial numbers, else the --top K by an objective, else the front;
    with ``leave_ties`` (a final training, unless --whole-front) the front less the members whose
    lead over a smaller one is within the validation noise (``search.view.front.ties``)."""
    all_trials = study.get_trials(deepcopy=False)
    finished = [t for t in all_trials if t.state == TrialState.COMPLETE and record.is_ours(t)]
    if not finished:
        raise UsageError(f"study {study.study_name!r} has no finished trials of fmnist-search to export")
    if trials:
        chosen = []
        for n in dict.fromkeys(trials):  # --trial 3 --trial 3 exports trial 3 once
            if not 0 <= n < len(all_trials):
                raise UsageError(f"--trial {n}: no such trial (the study has trials 0-{len(all_trials) - 1})")
            if all_trials[n].state == TrialState.COMPLETE and not record.is_ours(all_trials[n]):
                raise UsageError(f"--trial {n}: not trained by fmnist-search (no spec recorded)")
            if all_trials[n].state != TrialState.COMPLETE:
                raise UsageError(f"--trial {n}: the trial is {all_trials[n].state.name.lower()}; "
                                  f"only finished trials can be exported")
            chosen.append(all_trials[n])
    elif top is not None:
        if by not in record.OBJECTIVES:
            raise UsageError(f"--by: unknown objective {by!r} (valid: {', '.join(record.OBJECTIVES)})")
        key = record.OBJECTIVE_ATTR[by]
        ranked = [t for t in finished if t.user_attrs.get(key) is not None]
        if not ranked:
            raise UsageError(f"--by {by}: no finished trial recorded it")
        sign = -1 if record.OBJECTIVES[by][0] == "maximize" else 1
        chosen = sorted(ranked, key=lambda t: (sign * t.user_attrs[key], t.number))[:top]
    else:
        chosen = front(study)
        found = ties(study, chosen) if leave_ties else []
        if found:
            log(describe_ties(found))
            left = {t.number for t in found}
            chosen = [t for t in chosen if t.number not in left]
    if max_params is not None:
        chosen = [t for t in chosen if t.user_attrs[record.PARAMS] <= max_params]
        if not chosen:
            raise UsageError(f"--max-params {max_params:,}: none of the chosen trials is that small")
    return chosen
