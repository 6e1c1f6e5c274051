"""The study and its storage: what lives in the database and the artifact folder, and how workers
share it safely.

- ``storage``: opening an Optuna RDB storage (SQLite, PostgreSQL, MySQL), safe for racing workers
  and outages; the trials this process holds; URLs shown without their password.
- ``opening``: a study loaded or created, checked as ours, its objectives, schema and contract.
- ``record``: every key a study and a trial store, named once (a data contract), with the typed
  records of the budget and the weights folder.
- ``optuna_api``: the few Optuna internals the tool relies on, behind one door.
- ``claims``: a candidate claimed atomically, so two workers never train it twice.
- ``reclaim``: trials whose worker died queued again; ``rescue``: the result of a trial failed
  under a paused worker kept as a new trial.
- ``artifacts``: each finished trial's weights as an Optuna artifact, in a folder workers share.
"""
