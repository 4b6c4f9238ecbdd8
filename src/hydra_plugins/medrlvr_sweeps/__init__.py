"""medrlvr's Hydra plugins: ``hydra/sweeper=medrlvr_grid|medrlvr_optuna`` and ``hydra/launcher=medrlvr_subprocess``."""
