"""The registries of algorithm names: what is registered, and how a wrong name fails."""

import re
from pathlib import Path

import pytest
import torch

from medrlvr.algo import advantages as adv
from medrlvr.algo import core
from medrlvr.algo.registry import ADVANTAGE_ESTIMATORS, KL_ESTIMATORS, LOSS_AGGREGATIONS, Registry, algorithms


def test_registered_names_and_the_algorithms_they_label():
    assert ADVANTAGE_ESTIMATORS.names() == ("gae", "grpo", "grpo_no_std", "rloo", "reinforce_pp")
    assert algorithms() == {"ppo": "gae", "grpo": "grpo", "dr_grpo": "grpo_no_std", "rloo": "rloo", "reinforce_pp": "reinforce_pp"}
    assert [name for name in ADVANTAGE_ESTIMATORS.names() if ADVANTAGE_ESTIMATORS.get(name).critic] == ["gae"]
    assert [name for name in ADVANTAGE_ESTIMATORS.names() if ADVANTAGE_ESTIMATORS.get(name).groups] == [
        "grpo", "grpo_no_std", "rloo"
    ]
    assert KL_ESTIMATORS.names() == ("k1", "k2", "k3")
    assert LOSS_AGGREGATIONS.names() == ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def test_dispatch_calls_the_registered_function():
    assert ADVANTAGE_ESTIMATORS.get("rloo").fn is adv.rloo
    assert KL_ESTIMATORS.get("k3") is core.kl_k3 and LOSS_AGGREGATIONS.get("token-mean") is core.token_mean
    # x = 0.5: k2 = 0.125 through kl_estimate's lookup
    assert core.kl_estimate(torch.tensor([0.5]), torch.tensor([0.0]), "k2").item() == pytest.approx(0.125)


def test_unknown_name_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"algo\.kl_estimator: unknown 'k4'; choose one of k1, k2, k3"):
        KL_ESTIMATORS.get("k4")


def test_a_name_registers_once():
    registry = Registry("algo.example", "medrlvr.algo.core")
    registry.register("a")(len)
    with pytest.raises(ValueError, match=r"algo\.example: 'a' is registered twice"):
        registry.register("a")(len)


@pytest.mark.parametrize("registry", [ADVANTAGE_ESTIMATORS, KL_ESTIMATORS, LOSS_AGGREGATIONS])
def test_readme_lists_the_registered_names(registry):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = re.search(rf"^\| `{re.escape(registry.key)}` \| ([^|]+) \|$", readme, re.MULTILINE)
    assert row, f"README.md has no row for {registry.key} in the Algorithms section"
    assert tuple(re.findall(r"`([^`]+)`", row.group(1))) == registry.names()
