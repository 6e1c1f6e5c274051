"""The search layer: Optuna studies, pruning, export and the ``fmnist-search`` CLI."""
