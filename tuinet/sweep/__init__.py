"""Sweeps: many tuinet runs searched and pruned by Optuna, run by local worker processes or on a Ray cluster.

A sweep is a folder (``RUNS_DIR/<sweep>/``) holding its SPEC (``sweep.json``), its Optuna study
(``study.journal``, or an RDB storage URL), the driver's state for viewers (``state.json``) and requests to the
driver (``control/``). Every trial is a normal run folder next to it (``RUNS_DIR/<sweep>-tNNN/``): it shows in
``tuinet runs`` and ``tuinet compare``, and a local trial can be attached to and steered like any detached run.
"""
