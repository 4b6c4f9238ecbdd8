"""The bundled medical multiple-choice dataset: original questions written for this project.

Nothing here is copied from MedQA, USMLE, MMLU or any other question bank. The questions are generated
deterministically from a seed out of a small knowledge base, ``knowledge_base.json`` beside this module
(:func:`load_knowledge_base`): each :class:`Relation` pairs question templates with (subject, answer)
facts of basic, well-established textbook medicine. A
question asks for one fact's answer; its four distractors are other answers of the same relation,
and the correct option's position is balanced so each letter A-E is right about equally often. The
facts are chosen so that, within a relation, every answer is wrong for every other subject: any
answer of a relation is a safe distractor for its other questions (also when ``data.option_count``
adds more of them).

The generated splits (about 70/15/15 of each relation's facts, so every relation appears in every
split) are stored in MedQA's JSONL schema in ``bundled/{train,validation,test}.jsonl``, with each
question's metadata (its relation) under ``meta_info``.

The ``ood`` split (``bundled/ood.jsonl``) is out of distribution the way MMLU-Pro health is for MedQA:
another question style and ten options (A-J). It asks about the held-out facts (those of the validation
and test splits; none is trained on) in the other direction, from the answer back to the subject, in
"Which of the following ..." form (:data:`OOD_TEMPLATES`): the options are drugs, diseases, nutrients,
functions... where the in-distribution splits offer classes, causes and treatments. Its nine distractors
are subjects of the same relation with a different answer, so the knowledge base's guarantee (any
answer of a relation is wrong for its other subjects) makes exactly one option right. Relations whose
subjects are clinical vignettes have no OOD template (a ten-vignette option list).

Regenerate every split with::

    PYTHONPATH=src python -m medrlvr.data.bundled
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

from medrlvr.data.medqa import load_medqa_jsonl, write_medqa_jsonl
from medrlvr.data.schema import OPTION_LETTERS, MCQExample

BUNDLED_DIR = Path(__file__).parent / "bundled"
KNOWLEDGE_BASE = Path(__file__).parent / "knowledge_base.json"
SPLITS = ("train", "validation", "test")
OOD_SPLIT = "ood"
ALL_SPLITS = (*SPLITS, OOD_SPLIT)
SOURCE = "bundled"
OPTION_COUNT = 5
OOD_OPTION_COUNT = 10
HELD_OUT_FRACTION = 0.15


@dataclass(frozen=True)
class Relation:
    """Question templates (with a ``{subject}`` slot) and the (subject, answer) facts they ask about."""

    name: str
    templates: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]

    def question(self, subject: str, rng: random.Random) -> str:
        """The question about ``subject``, in a template chosen with ``rng``."""
        return _capitalize(rng.choice(self.templates).format(subject=subject))

    def distractor_pool(self, answer: str) -> list[str]:
        """The relation's distinct answers other than ``answer`` (case-insensitive), in knowledge-base order."""
        banned = {answer.casefold()}
        pool: list[str] = []
        for _, candidate in self.facts:
            if candidate.casefold() not in banned:
                banned.add(candidate.casefold())
                pool.append(candidate)
        return pool

    def subjects_without(self, answer: str) -> list[str]:
        """The relation's subjects whose answer is not ``answer`` (case-insensitive), in knowledge-base order."""
        return [subject for subject, candidate in self.facts if candidate.casefold() != answer.casefold()]


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


def load_knowledge_base(path: Path) -> tuple[tuple[Relation, ...], dict[str, tuple[str, ...]]]:
    """The relations of the JSON knowledge base at ``path`` and the OOD templates of those that have them.

    Each relation is ``{"name", "templates", "facts": [[subject, answer], ...]}``, plus ``"ood_templates"``
    (the OOD split's question style, with an ``{answer}`` slot) where the relation is asked out of distribution.
    """
    relations, ood_templates = [], {}
    for number, entry in enumerate(json.loads(path.read_text(encoding="utf-8"))["relations"], start=1):
        missing = {"name", "templates", "facts"} - set(entry)
        if missing:
            raise ValueError(f"{path}: relation {number} lacks {', '.join(sorted(missing))}")
        facts = tuple((subject, answer) for subject, answer in entry["facts"])
        relations.append(Relation(entry["name"], tuple(entry["templates"]), facts))
        if "ood_templates" in entry:
            ood_templates[entry["name"]] = tuple(entry["ood_templates"])
    return tuple(relations), ood_templates


# OOD_TEMPLATES, the OOD split's question style: from a relation's answer back to its subject, "Which of the
# following ...", with an ``{answer}`` slot (after a colon, so the answer keeps its capital). Absent relations
# are not asked.
RELATIONS, OOD_TEMPLATES = load_knowledge_base(KNOWLEDGE_BASE)


def _split_facts(facts: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """About 70/15/15 of an already shuffled fact list, with at least one fact in each held-out split."""
    held_out = max(1, round(HELD_OUT_FRACTION * len(facts)))
    return {
        "train": facts[2 * held_out :],
        "validation": facts[:held_out],
        "test": facts[held_out : 2 * held_out],
    }


def _make_example(
    relation: Relation, subject: str, answer: str, position: int, example_id: str, rng: random.Random
) -> MCQExample:
    """One question about ``subject`` with the correct answer at option index ``position``."""
    texts = rng.sample(relation.distractor_pool(answer), OPTION_COUNT - 1)
    texts.insert(position, answer)
    return MCQExample(
        question=relation.question(subject, rng),
        options=dict(zip(OPTION_LETTERS, texts)),
        answer=OPTION_LETTERS[position],
        source=SOURCE,
        id=example_id,
        metadata={"relation": relation.name},
    )


def _make_ood_example(
    relation: Relation, subject: str, answer: str, position: int, example_id: str, rng: random.Random
) -> MCQExample:
    """One OOD question asking which subject has ``answer``, the subject at option index ``position``."""
    texts = rng.sample(relation.subjects_without(answer), OOD_OPTION_COUNT - 1)
    texts.insert(position, subject)
    return MCQExample(
        question=rng.choice(OOD_TEMPLATES[relation.name]).format(answer=answer),
        options=dict(zip(OPTION_LETTERS, map(_capitalize, texts))),
        answer=OPTION_LETTERS[position],
        source=SOURCE,
        id=example_id,
        metadata={"relation": relation.name},
    )


def _generate_ood(held_out: list[tuple[Relation, str, str]], rng: random.Random) -> list[MCQExample]:
    """The OOD questions about the held-out facts of the relations that have OOD templates, positions balanced."""
    items = [item for item in held_out if item[0].name in OOD_TEMPLATES]
    rng.shuffle(items)
    positions = [index % OOD_OPTION_COUNT for index in range(len(items))]
    rng.shuffle(positions)
    return [
        _make_ood_example(relation, subject, answer, position, f"{SOURCE}-{OOD_SPLIT}-{number:04d}", rng)
        for number, ((relation, subject, answer), position) in enumerate(zip(items, positions), start=1)
    ]


def generate_bundled(seed: int = 0) -> dict[str, list[MCQExample]]:
    """Generate the train/validation/test questions from the knowledge base, and the OOD questions from the
    validation and test facts (with their own random stream), deterministically for ``seed``."""
    rng = random.Random(seed)
    items: dict[str, list[tuple[Relation, str, str]]] = {split: [] for split in SPLITS}
    for relation in RELATIONS:
        facts = list(relation.facts)
        rng.shuffle(facts)
        for split, chunk in _split_facts(facts).items():
            items[split] += [(relation, subject, answer) for subject, answer in chunk]
    splits = {}
    for split in SPLITS:
        rng.shuffle(items[split])
        positions = [index % OPTION_COUNT for index in range(len(items[split]))]
        rng.shuffle(positions)
        splits[split] = [
            _make_example(relation, subject, answer, position, f"{SOURCE}-{split}-{number:04d}", rng)
            for number, ((relation, subject, answer), position) in enumerate(zip(items[split], positions), start=1)
        ]
    splits[OOD_SPLIT] = _generate_ood(items["validation"] + items["test"], random.Random(f"{OOD_SPLIT}-{seed}"))
    return splits


def split_path(split: str, directory: Path = BUNDLED_DIR) -> Path:
    """The JSONL file of ``split``; raise ``ValueError`` naming the valid splits for an unknown one."""
    if split not in ALL_SPLITS:
        raise ValueError(f"unknown bundled split {split!r}; valid splits: {', '.join(ALL_SPLITS)}")
    return directory / f"{split}.jsonl"


def write_bundled(directory: Path = BUNDLED_DIR, seed: int = 0) -> list[Path]:
    """Generate the dataset and write one MedQA-schema JSONL file per split (metadata under ``meta_info``)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, examples in generate_bundled(seed).items():
        paths.append(split_path(split, directory))
        write_medqa_jsonl([replace(ex, metadata={"meta_info": dict(ex.metadata)}) for ex in examples], paths[-1])
    return paths


def load_bundled(split: str) -> list[MCQExample]:
    """Read one split of the bundled dataset from its JSONL file."""
    return [
        replace(ex, source=SOURCE, metadata=dict(ex.metadata["meta_info"]))
        for ex in load_medqa_jsonl(split_path(split))
    ]


if __name__ == "__main__":
    for written in write_bundled():
        print(f"wrote {written}")
