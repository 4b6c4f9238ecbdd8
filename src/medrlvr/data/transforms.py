"""Dataset transforms applied after loading: changing the number of answer options (``data.option_count``) and
re-shuffling the options each time a question is drawn for training (``data.shuffle_options_each_epoch``)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from medrlvr.data.schema import OPTION_LETTERS, MCQExample

MIN_OPTIONS = 2
MAX_OPTIONS = len(OPTION_LETTERS)
# Metadata fields that say what kind of question it is, finest first: the bundled set's relation, MedMCQA's
# topic and subject, MMLU-Pro's source subject, MedQA's exam step. Extra distractors come from the options of
# questions of the same kind first, then of any question of the dataset.
KIND_FIELDS = ("relation", "topic_name", "subject_name", "src", "meta_info")
# Options that refer to other options ("All of the above", "Both A and B") lose their meaning once moved to
# another question or reshuffled, so they are never drawn as extra distractors.
REFERS_TO_OPTIONS = re.compile(
    r"\b(?:all|none|both|neither|either)\b.*\b(?:above|following|options?|choices?)\b"
    r"|\b[A-J]\s*(?:,|and|&|or)\s*[A-J]\b",
    re.IGNORECASE,
)

Kind = tuple[tuple[str, str], ...]


def question_kinds(example: MCQExample) -> list[Kind]:
    """The kinds of ``example`` from its metadata, finest first (none when it says nothing). A kind is a
    ``(field, value)`` pair together with the coarser ones, so that a topic is one within its subject."""
    values = ((name, example.metadata.get(name)) for name in KIND_FIELDS)
    fields = [(name, value) for name, value in values if isinstance(value, str) and value.strip()]
    return [tuple(fields[start:]) for start in range(len(fields))]


@dataclass(frozen=True)
class _OptionPool:
    """Distinct option texts (one spelling per case-insensitive text, sorted) of a list of examples, by kind and
    all together; options that refer to other options are left out."""

    by_kind: dict[Kind, list[str]]
    everything: list[str]

    @classmethod
    def from_examples(cls, examples: list[MCQExample]) -> _OptionPool:
        by_kind: dict[Kind, dict[str, str]] = {}
        everything: dict[str, str] = {}
        for example in examples:
            groups = [everything, *(by_kind.setdefault(kind, {}) for kind in question_kinds(example))]
            for text in example.options.values():
                if REFERS_TO_OPTIONS.search(text):
                    continue
                for group in groups:
                    group[_key(text)] = min(group.get(_key(text), text), text)
        return cls({kind: sorted(texts.values()) for kind, texts in by_kind.items()}, sorted(everything.values()))


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
    """``count`` new distractors from other questions' options: same kind first (finest kind first), then any."""
    taken = {_key(text) for text in example.options.values()}
    picked: list[str] = []
    for texts in [*(pool.by_kind.get(kind, []) for kind in question_kinds(example)), pool.everything]:
        picked += _draw(texts, taken, count - len(picked), rng)
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
    option texts of the other questions of ``examples``: those of the same kind first (see ``KIND_FIELDS``),
    never options referring to other options, never a text already among the options (case-insensitive).
    Options are then reshuffled with a generator seeded by ``seed`` and the example, re-lettered from A, and
    the previous answer letter is kept in ``metadata["original_answer"]``.
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


def shuffle_options(example: MCQExample, seed: int, draw: int) -> MCQExample:
    """``example`` with its option texts in a new order, seeded by ``seed``, the example and ``draw`` (the how
    many-th time it is drawn), re-lettered from A with the answer letter following its text; the previous answer
    letter is kept in ``metadata["original_answer"]`` (unless already there). A question with an option that
    refers to other options ("All of the above", "Both A and B") keeps its order: moving those breaks them."""
    if any(REFERS_TO_OPTIONS.search(text) for text in example.options.values()):
        return example
    rng = random.Random(f"{seed}\x00{example.source}\x00{example.id}\x00{example.question}\x00draw {draw}")
    old = list(example.options)
    new_order = rng.sample(old, len(old))  # new_order[i] is the old letter shown at position i
    return replace(
        example,
        options={OPTION_LETTERS[i]: example.options[letter] for i, letter in enumerate(new_order)},
        answer=OPTION_LETTERS[new_order.index(example.answer)],
        metadata={"original_answer": example.answer, **example.metadata},
    )


def shuffled_per_draw(examples: list[MCQExample], order: list[int], seed: int) -> list[MCQExample]:
    """One example per entry of ``order`` (indices into ``examples``, the run's whole sampling order), its options
    re-shuffled by :func:`shuffle_options` with ``draw`` = how many times that index came earlier in ``order``, so
    each time a question is drawn it shows a new, reproducible order."""
    draws: dict[int, int] = {}
    drawn = []
    for index in order:
        drawn.append(shuffle_options(examples[index], seed, draws.get(index, 0)))
        draws[index] = draws.get(index, 0) + 1
    return drawn
