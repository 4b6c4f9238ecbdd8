"""Accuracy, format rate and lengths of a policy on MCQA examples, through the rollout interface."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import MCQExample
from medrlvr.rewards.functions import CorrectnessReward
from medrlvr.rollout.base import RolloutEngine, SamplingParams


@dataclass(frozen=True)
class EvalResult:
    """Aggregate metrics plus one record per completion (question id, response, parse, correctness)."""

    metrics: dict[str, float]
    records: list[dict[str, Any]]


def evaluate(
    engine: RolloutEngine,
    prompt_builder: PromptBuilder,
    examples: list[MCQExample],
    max_new_tokens: int,
    stop_strings: tuple[str, ...] = (),
    temperature: float = 0.0,
    num_samples: int = 1,
    seed: int = 0,
) -> EvalResult:
    """Generate (greedy by default) and score with the same parser as training.

    Accuracy counts a completion as correct only if it is well formatted and names the right letter.
    """
    params = SamplingParams(
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        stop_strings=stop_strings,
        seed=seed,
    )
    rollout = engine.generate([prompt_builder(e) for e in examples], params)
    rows = [examples[i] for i in rollout.prompt_index]
    responses = [prompt_builder.full_response(t) for t in rollout.texts]
    scored = CorrectnessReward()(responses, [e.answer for e in rows], [e.letters for e in rows])
    n = len(responses)
    lengths = rollout.response_mask.sum(dim=1).tolist()
    chosen = Counter(p.letter for p in scored.parsed if p.letter is not None)
    metrics = {
        "accuracy": sum(scored.correct) / n,
        "format_rate": sum(p.format_ok for p in scored.parsed) / n,
        "response_tokens": sum(lengths) / n,
        "reasoning_words": sum(scored.reasoning_words) / n,
        "truncated_rate": sum(r == "length" for r in rollout.finish_reasons) / n,
        "num_completions": float(n),
    }
    metrics.update({f"chosen_{letter}": count / n for letter, count in sorted(chosen.items())})
    records = [
        {
            "id": row.id,
            "answer": row.answer,
            "response": response,
            "letter": parsed.letter,
            "format_error": parsed.format_error,
            "correct": correct,
        }
        for row, response, parsed, correct in zip(rows, responses, scored.parsed, scored.correct)
    ]
    return EvalResult(metrics=metrics, records=records)
