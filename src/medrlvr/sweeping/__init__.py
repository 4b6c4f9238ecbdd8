"""Sweeps: Hydra sweepers (grid, Optuna) and a one-process-per-trial launcher, with MLflow bookkeeping
(``sweep_tracking``) and the report comparing the trials (``sweep_report``).

The Hydra plugin classes live in ``hydra_plugins.medrlvr_sweeps`` (where Hydra discovers plugins) and
delegate to this package.
"""
