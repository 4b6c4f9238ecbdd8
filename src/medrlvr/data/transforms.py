"""Dataset transforms applied after loading: changing the number of answer options (``data.option_count``)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from medrlvr.data.schema import OPTION_LETTERS, MCQExample

MIN_OPTIONS = 2
MAX_OPTIONS = len(OPTION_LETTERS)


@dataclass(frozen=True)
class _OptionPool:
    """Distinct option texts (one spelling per case-insensitive text, sorted) of a list of examples."""

    by_relation: dict[str, list[str]]
    everything: list[str]

    @classmethod
    def from_examples(cls, examples: list[MCQExample]) -> _OptionPool:
        by_relation: dict[str, dict[str, str]] = {}
        everything: dict[str, str] = {}
        for example in examples:
            relation = example.metadata.get("relation")
            groups = [everything] if relation is None else [everything, by_relation.setdefault(relation, {})]
            for text in example.options.values():
                for group in groups:
                    group[_key(text)] = min(group.get(_key(text), text), text)
        return cls(
            {relation: sorted(texts.values()) for relation, texts in by_relation.items()},
            sorted(everything.values()),
        )


def _key(text: str) -> str:
    return text.strip().casefold()


def _draw(pool: list[str], taken: set[str], count: int, rng: random.Random) -> list[str]:
    """Up to ``count`` random texts of ``pool`` whose keys are not in ``taken`` (which is updated)."""
    picked: list[str] = []
    tried: set[int] = set()
    while len(picked) < count and len(tried) < len(pool):
        index = rng.randrange(len(pool))
        if index in tried:
            continue
        tried.add(index)
        if _key(pool[index]) not in taken:
            taken.add(_key(pool[index]))
            picked.append(pool[index])
    return picked


def _extra_distractors(
    example: MCQExample, count: int, option_count: int, pool: _OptionPool, rng: random.Random
) -> list[str]:
    """``count`` new distractors from other questions' options, same relation first."""
    taken = {_key(text) for text in example.options.values()}
    relation = example.metadata.get("relation")
    picked = _draw(pool.by_relation.get(relation, []), taken, count, rng) if relation is not None else []
    picked += _draw(pool.everything, taken, count - len(picked), rng)
    if len(picked) < count:
        raise ValueError(
            f"data.option_count={option_count}: question {example.id!r} has {len(example.options)} options and "
            f"only {len(picked)} of the {count} extra distinct option texts it needs exist in the other questions"
        )
    return picked


def _with_option_count(example: MCQExample, option_count: int, seed: int, pool: _OptionPool) -> MCQExample:
    """``example`` with ``option_count`` options: correct text kept, distractors dropped or added, reshuffled."""
    rng = random.Random(f"{seed}\x00{example.source}\x00{example.id}\x00{example.question}")
    distractors = [text for letter, text in example.options.items() if letter != example.answer]
    wanted = option_count - 1
    if wanted <= len(distractors):
        distractors = rng.sample(distractors, wanted)
    else:
        distractors += _extra_distractors(example, wanted - len(distractors), option_count, pool, rng)
    texts = [example.answer_text, *distractors]
    order = list(range(len(texts)))
    rng.shuffle(order)
    return replace(
        example,
        options={letter: texts[index] for letter, index in zip(OPTION_LETTERS, order)},
        answer=OPTION_LETTERS[order.index(0)],
        metadata={**example.metadata, "original_answer": example.answer},
    )


def set_option_count(examples: list[MCQExample], option_count: int | None, seed: int) -> list[MCQExample]:
    """Give every example ``option_count`` options (``None``: return ``examples`` unchanged).

    The correct option is kept; surplus distractors are dropped at random, missing ones are drawn from the
    option texts of the other questions (same ``metadata["relation"]`` first), never repeating a text already
    among the options (case-insensitive). Options are then reshuffled with a generator seeded by ``seed`` and
    the example, re-lettered from A, and the previous answer letter is kept in ``metadata["original_answer"]``.
    """
    if option_count is None:
        return examples
    if isinstance(option_count, bool) or not isinstance(option_count, int) or not (
        MIN_OPTIONS <= option_count <= MAX_OPTIONS
    ):
        raise ValueError(
            f"data.option_count must be an integer from {MIN_OPTIONS} to {MAX_OPTIONS} "
            f"(or null to keep each question's options), got {option_count!r}"
        )
    pool = _OptionPool.from_examples(examples)
    return [_with_option_count(example, option_count, seed, pool) for example in examples]
