"""What people see: the terminal, optuna-dashboard and the export's report, all from one set of
figures.

- ``front``: the front as rows (the terminal table, the study's note and the report render the
  same rows), which seed models it dominates or ties with.
- ``hypervolume``: the front's hypervolume against compute, and the stopping rule built on it.
- ``dashboard``: the study's note, the trials' notes and the plots the search leaves for
  optuna-dashboard; ``guard``: who may do what through ``fmnist-search dashboard``.
- ``progress``: the live status line; ``table``: terminal tables; ``document``: one report as
  Markdown and HTML; ``figures``: the report's pictures; ``quality``: the benchmarks' measures.
"""
