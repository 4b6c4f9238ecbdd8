"""Accuracy, format rate, lengths, per-option-count accuracy and answer-position bias of a policy on MCQA
examples, through the rollout interface (so any :class:`RolloutEngine` backend serves).

With ``num_samples = k > 1`` every question gets k sampled completions: ``accuracy`` is then the mean
over all completions (pass@1 estimated from k samples) and ``majority_accuracy`` scores the most frequent
letter among each question's well-formatted completions (ties go to the letter that appeared first; a
question with no well-formatted completion counts as wrong).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Any

from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import OPTION_LETTERS, MCQExample
from medrlvr.rewards.functions import CorrectnessReward
from medrlvr.rewards.parsing import ParseRules
from medrlvr.progress import clock
from medrlvr.rollout.base import RolloutEngine, SamplingParams

log = logging.getLogger(__name__)


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
    chunk_size: int = 64,
    rules: ParseRules = ParseRules(),
) -> EvalResult:
    """Generate (greedy by default) and score with the same parser as training (``rules``: pass the training
    reward's, :func:`medrlvr.training.builders.parse_rules`), ``chunk_size`` questions at a time with a progress
    line after each chunk.

    Accuracy counts a completion as correct only if it is well formatted and names the right letter.
    """
    params = SamplingParams(
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        stop_strings=stop_strings,
        seed=seed,
    )
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start : start + chunk_size]
        records += _score_chunk(engine, prompt_builder, chunk, replace(params, seed=seed + start), start, rules)
        done = start + len(chunk)
        elapsed = time.perf_counter() - started
        correct = sum(r["correct"] for r in records) / len(records)
        log.info(
            "evaluated %d/%d questions | accuracy so far %.3f | ETA %s",
            done, len(examples), correct, clock(elapsed / done * (len(examples) - done)),
        )
    return EvalResult(metrics=summarize(records), records=records)


def _score_chunk(
    engine: RolloutEngine,
    prompt_builder: PromptBuilder,
    examples: list[MCQExample],
    params: SamplingParams,
    offset: int,
    rules: ParseRules,
) -> list[dict[str, Any]]:
    """One record per completion of ``examples`` (question indices start at ``offset``)."""
    rollout = engine.generate([prompt_builder(e) for e in examples], params)
    rows = [examples[i] for i in rollout.prompt_index]
    responses = [prompt_builder.full_response(t) for t in rollout.texts]
    scored = CorrectnessReward(rules=rules)(
        responses, [e.answer for e in rows], [e.letters for e in rows], [e.options for e in rows]
    )
    lengths = rollout.response_mask.sum(dim=1).tolist()
    sample_number: Counter[int] = Counter()
    records = []
    for i, (row, response, parsed, correct) in enumerate(zip(rows, responses, scored.parsed, scored.correct)):
        question = offset + rollout.prompt_index[i]
        records.append(
            {
                "id": row.id,
                "question_index": question,
                "sample": sample_number[question],
                "num_options": len(row.options),
                "answer": row.answer,
                "response": response,
                "letter": parsed.letter,
                "format_error": parsed.format_error,
                "text_before_think": bool(parsed.text_before_think),
                "correct": correct,
                "reasoning_words": scored.reasoning_words[i],
                "response_tokens": int(lengths[i]),
                "finish_reason": rollout.finish_reasons[i],
            }
        )
        sample_number[question] += 1
    return records


def majority_letters(records: list[dict[str, Any]]) -> dict[int, str | None]:
    """Per question index, the most frequent letter among its well-formatted completions (first seen wins ties)."""
    letters: dict[int, list[str]] = {}
    for record in records:
        found = letters.setdefault(record["question_index"], [])
        if record["letter"] is not None:  # the parser gives a letter only to well-formatted completions
            found.append(record["letter"])
    return {q: Counter(found).most_common(1)[0][0] if found else None for q, found in letters.items()}


def letter_shares(records: list[dict[str, Any]]) -> dict[str, float]:
    """``chosen_X`` and ``true_X`` for every letter X up to the largest option count of ``records``."""
    letters = OPTION_LETTERS[: max(r["num_options"] for r in records)]
    chosen = Counter(r["letter"] for r in records)
    true = Counter(r["answer"] for r in records)
    shares = {f"chosen_{x}": chosen[x] / len(records) for x in letters}
    return shares | {f"true_{x}": true[x] / len(records) for x in letters}


def summarize(records: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics of scored completions (see :func:`evaluate`'s records).

    - ``accuracy``, ``format_rate``, ``truncated_rate``, ``text_before_think_rate``: shares of completions
      (the last: text stood before ``<think>``, allowed by ``reward.format=study``);
    - ``response_tokens``, ``reasoning_words``: means over completions (0 words when there is no think block);
    - ``majority_accuracy``: only when some question has several samples;
    - ``accuracy_options_K`` and ``questions_options_K`` for each option count K present;
    - ``chosen_X``: share of completions answering letter X; ``true_X``: share whose correct letter is X (both
      for every letter up to the largest option count, 0 for a letter never chosen or never right);
      ``position_bias_tv``: total variation distance ½·Σ_X |p_chosen(X) − p_true(X)| between the letters
      chosen by the answered (well-formatted) completions and the correct letters of the same completions
      (0 = the model picks positions as often as they are right; absent when nothing was answered).
    """
    n = len(records)
    if n == 0:
        raise ValueError("cannot summarize an evaluation without completions")
    questions = {r["question_index"]: r for r in records}
    metrics = {
        "accuracy": sum(r["correct"] for r in records) / n,
        "format_rate": sum(r["format_error"] is None for r in records) / n,
        "response_tokens": sum(r["response_tokens"] for r in records) / n,
        "reasoning_words": sum(r["reasoning_words"] for r in records) / n,
        "truncated_rate": sum(r["finish_reason"] == "length" for r in records) / n,
        "text_before_think_rate": sum(r["text_before_think"] for r in records) / n,
        "num_completions": float(n),
        "num_questions": float(len(questions)),
    }
    if n > len(questions):
        majority = majority_letters(records)
        metrics["majority_accuracy"] = sum(majority[q] == r["answer"] for q, r in questions.items()) / len(questions)
    by_count: dict[int, list[bool]] = defaultdict(list)
    for record in records:
        by_count[record["num_options"]].append(record["correct"])
    for count, correct in sorted(by_count.items()):
        metrics[f"accuracy_options_{count}"] = sum(correct) / len(correct)
        metrics[f"questions_options_{count}"] = float(sum(r["num_options"] == count for r in questions.values()))
    metrics.update(letter_shares(records))
    answered = [r for r in records if r["letter"] is not None]
    if answered:
        chosen_share = Counter(r["letter"] for r in answered)
        true_share = Counter(r["answer"] for r in answered)
        metrics["position_bias_tv"] = 0.5 * sum(
            abs(chosen_share[x] - true_share[x]) / len(answered) for x in OPTION_LETTERS
        )
    return metrics
