"""Helpers the tests and the benchmarks share, as Optuna keeps ``optuna.testing``: real database
servers started for a test (``postgres``, ``mariadb``), small synthetic data sets (``synthetic``),
a trial in training to kill or pause (``victim``), and a search or a CLI process in one call
(``support``). Not used by the tool itself."""
