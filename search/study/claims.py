"""Claiming a candidate before training it, atomically, in a table of our own in the study's
database: two workers that drew the same candidate at once train it once.

One row per (study, spec): the first insert wins; a worker whose insert meets the row learns which
trial holds the candidate. A claim held by a trial that failed (its worker died) is taken over by
compare-and-set, so a retried configuration trains again. Optuna's own tables are left alone.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import sqlalchemy as sa

from search.study import record
from search.study.storage import patient

_META = sa.MetaData()
CLAIMS = sa.Table(
    record.CLAIMS_TABLE, _META,
    sa.Column("study_id", sa.Integer, primary_key=True),
    sa.Column("spec_key", sa.String(64), primary_key=True),  # sha256 of the canonical spec JSON
    sa.Column("trial_number", sa.Integer, nullable=False),
)


def spec_key(spec_json: str) -> str:
    return hashlib.sha256(spec_json.encode()).hexdigest()


_READY: set[str] = set()  # databases (by URL) where this process has made sure of the table


def _create_table(engine: sa.engine.Engine) -> None:
    if str(engine.url) in _READY:  # once per process, not one inspection per trial
        return
    try:
        _META.create_all(engine, checkfirst=True)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
        if not sa.inspect(engine).has_table(CLAIMS.name):  # not another worker's creation: a real fault
            raise
    _READY.add(str(engine.url))


def _claim(engine: sa.engine.Engine, study_id: int, key: str, number: int,
           released: Callable[[int], bool]) -> int | None:
    _create_table(engine)
    row = {"study_id": study_id, "spec_key": key}
    for _ in range(3):  # an insert, or a takeover of a released claim, each lost at most to a rival
        try:
            with engine.begin() as c:
                c.execute(sa.insert(CLAIMS).values(**row, trial_number=number))
            return None
        except sa.exc.IntegrityError:
            pass
        where = (CLAIMS.c.study_id == study_id) & (CLAIMS.c.spec_key == key)
        with engine.begin() as c:
            owner = c.execute(sa.select(CLAIMS.c.trial_number).where(where)).scalar()
        if owner is None:  # the row went away between the insert and the read: insert again
            continue
        if owner == number:
            return None
        if not released(owner):
            return owner
        with engine.begin() as c:
            taken = c.execute(sa.update(CLAIMS).where(where & (CLAIMS.c.trial_number == owner))
                              .values(trial_number=number)).rowcount
        if taken == 1:
            return None
    return owner


def claim(engine: sa.engine.Engine, study_id: int, spec_json: str, number: int,
          released: Callable[[int], bool]) -> int | None:
    """None when trial ``number`` now holds the candidate ``spec_json``; else the number of the
    trial that holds it. ``released(n)``: whether trial n gave its claim up (it failed)."""
    call = _claim if engine.dialect.name == "sqlite" else patient(_claim)  # a server may be away a while
    return call(engine, study_id, spec_key(spec_json), number, released)
