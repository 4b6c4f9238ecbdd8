"""From a scored rollout to the tensors one PPO update needs."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from medrlvr.algo.assembly import shape_advantages
from medrlvr.models.actor_critic import ActorCritic
from medrlvr.models.prompt_sharing import PromptSharing
from medrlvr.rollout.base import RolloutBatch


@dataclass(frozen=True)
class Experience:
    """Everything an update reads; all tensors ``(N, ·)`` with rows = completions.

    ``input_ids``/``attention_mask``: prompt + response, ``(N, P + T)``; the rest ``(N, T)`` over
    response positions, except ``scores`` ``(N,)`` and ``frozen_hidden`` ``(N, P + T, H)``: the output of
    the frozen bottom layers, taken from the rollout or computed once (None when every layer trains). ``sharing`` says which prompt tokens rows share;
    it stays true for any selection of whole prompt groups. ``old_logprobs`` are the trainer's recomputed
    log-probs, ``rollout_logprobs`` the rollout engine's for the same tokens.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    rollout_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    kl: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    scores: torch.Tensor
    frozen_hidden: torch.Tensor | None = None
    sharing: PromptSharing = PromptSharing()

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor) -> Experience:
        """The rows in ``index`` (a minibatch); select whole prompt groups to keep ``sharing`` true."""
        picked = {f.name: getattr(self, f.name) for f in fields(self)}
        return Experience(
            **{name: value[index] if isinstance(value, torch.Tensor) else value for name, value in picked.items()}
        )

    def split(self, size: int) -> list[Experience]:
        """Consecutive pieces of ``size`` rows (micro-batches). A piece that cuts a prompt group keeps only
        the prefix every row shares; each of its rows then runs its own prompt."""
        whole_groups = size % self.sharing.group_size == 0
        sharing = self.sharing if whole_groups else replace(self.sharing, group_size=1)
        rows = torch.arange(len(self), device=self.input_ids.device)
        return [replace(self.select(piece), sharing=sharing) for piece in rows.split(size)]


@torch.no_grad()
def make_experience(
    model: ActorCritic,
    rollout: RolloutBatch,
    scores: torch.Tensor,
    *,
    temperature: float,
    kl_coef: float,
    kl_estimator: str,
    advantage_estimator: str,
    gamma: float,
    lam: float,
    group_eps: float,
    whiten_advantages: bool,
    forward_batch_size: int,
    reuse_rollout_logprobs: bool = False,
) -> Experience:
    """Recompute old/reference log-probs (and values with a critic), fold ``kl_coef``·KL into the rewards
    (0 turns that off), and estimate advantages (GAE with a critic, otherwise group or REINFORCE++ returns).

    With ``reuse_rollout_logprobs`` the rollout's log-probs are the old log-probs and no policy pass runs (a
    critic's values come from a pass without the output layer). Without a critic ``values`` are zeros. When
    the rollout carries the inputs of the first trained layer (``rollout.layer_inputs``), the frozen layers
    do not run again; they are equal to a new pass up to float rounding, and every pass of the iteration
    (old, reference, values, the update) starts from the same ones.
    """
    captured = rollout.layer_inputs
    if captured is not None and rollout.layer_inputs_of != model.frozen_layers:
        raise ValueError(
            f"the rollout kept the inputs of layer {rollout.layer_inputs_of}, but the first trained layer is "
            f"{model.frozen_layers}"
        )
    input_ids = torch.cat([rollout.prompt_ids, rollout.response_ids], dim=1)
    attention_mask = torch.cat([rollout.prompt_mask, rollout.response_mask], dim=1)
    response_ids, mask = rollout.response_ids, rollout.response_mask.float()
    group = group_size(rollout.prompt_index)
    sharing = PromptSharing.detect(input_ids, attention_mask, rollout.prompt_ids.shape[1], group)
    chunk = whole_group_rows(forward_batch_size, group)
    old_logprobs, ref_logprobs, values, frozen = [], [], [], []
    for start in range(0, len(input_ids), chunk):
        rows = slice(start, start + chunk)
        args = (input_ids[rows], attention_mask[rows], response_ids[rows])
        hidden = captured[rows] if captured is not None else model.frozen_prefix(input_ids[rows], attention_mask[rows], sharing)
        common = {"temperature": temperature, "frozen_hidden": hidden, "sharing": sharing, "response_mask": mask[rows]}
        reference = model.policy_forward(*args, reference=True, **common)
        if reuse_rollout_logprobs:
            old_logprobs.append(rollout.logprobs[rows])
            values.append(
                model.critic_values(*args[:2], response_ids.shape[1], hidden, sharing)
                if model.has_critic
                else torch.zeros_like(reference.logprobs)
            )
        else:
            policy = model.policy_forward(*args, with_values=model.has_critic, **common)
            old_logprobs.append(policy.logprobs)
            values.append(policy.values if model.has_critic else torch.zeros_like(policy.logprobs))
        ref_logprobs.append(reference.logprobs)
        frozen.append(hidden)
    old_lp, ref_lp, vals = (torch.cat(t) * mask for t in (old_logprobs, ref_logprobs, values))
    shaped = shape_advantages(
        scores, old_lp, ref_lp, vals, mask, kl_coef=kl_coef, kl_estimator=kl_estimator,
        advantage_estimator=advantage_estimator, group_size=group, gamma=gamma, lam=lam, group_eps=group_eps,
        whiten=whiten_advantages,
    )
    return Experience(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_ids=response_ids,
        response_mask=mask,
        old_logprobs=old_lp,
        rollout_logprobs=rollout.logprobs * mask,
        ref_logprobs=ref_lp,
        values=vals,
        kl=shaped.kl,
        rewards=shaped.rewards,
        advantages=shaped.advantages,
        returns=shaped.returns,
        scores=scores,
        frozen_hidden=None if frozen[0] is None else torch.cat(frozen),
        sharing=sharing,
    )


def group_size(prompt_index: list[int]) -> int:
    """Number of consecutive rows per prompt when every prompt has the same count, else 1."""
    counts = [prompt_index.count(i) for i in sorted(set(prompt_index))]
    size = counts[0]
    grouped = all(c == size for c in counts) and prompt_index == sorted(prompt_index)
    return size if grouped else 1


def whole_group_rows(rows: int, group: int) -> int:
    """``rows`` rounded down to whole prompt groups of ``group`` rows, at least one group: the rows of a
    minibatch or of a no-grad pass, so that each group's prompt runs once."""
    return max(group, rows // group * group)
