"""The search layer: Optuna studies of CNNs for Fashion-MNIST, and the ``fmnist-search`` CLI.

Grouped by concept, as Optuna groups samplers/, pruners/ and storages/:

- ``study/``: the study and its storage (opening, the record of what is stored, claims, dead and
  rescued trials, weights as artifacts, Optuna's internals behind one door);
- ``loop/``: the search itself (the plan, the loop, one trial, pruning, options, workers);
- ``view/``: what people see (the front, the hypervolume, the dashboard's notes and plots and who
  may use the dashboard, the live line, tables, the report's document and pictures);
- ``handover/``: handing the chosen models over (export, the final training, predict, manifests);
- ``signals`` (SIGTERM as Ctrl-C) and ``pareto`` (non-dominated sorting, 2-D hypervolume), used
  throughout; ``cli`` parses, ``commands`` does (``viewing`` does ``show``, ``dashboard`` and
  ``presets``, without torch, so that they answer at once); ``testing`` holds helpers for tests
  and benchmarks.

Within ``search``, ``study`` imports nothing from the other groups; ``view`` reads ``study``;
``loop`` runs on both; ``handover`` may use any of them; ``commands`` and ``viewing`` tie them together.
"""
