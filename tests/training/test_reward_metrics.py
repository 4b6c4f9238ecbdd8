"""The PPO module logs each of the reward's components as ``reward/<component>`` at every iteration."""

import pytest
from test_rollout_mismatch import fit

from medrlvr.rollout.hf import HFRolloutEngine


@pytest.mark.parametrize(
    "reward, components",
    [
        ("composite", {"correctness", "leak_penalty", "structure_penalty"}),
        ("weighted", {"default", "composite"}),
    ],
)
def test_reward_components_are_logged(reward, components):
    for metrics in fit(HFRolloutEngine, f"reward={reward}"):
        logged = {key.removeprefix("reward/") for key in metrics if key.startswith("reward/")}
        assert logged == components | {"mean", "std", "accuracy", "format_rate", "equal_reward_group_frac"}
        assert sum(metrics[f"reward/{name}"] for name in components) == pytest.approx(metrics["reward/mean"])
