"""The one parser of completions, shared by the rewards, the evaluator and the stage classifier.

Two formats (:class:`ParseRules`, ``reward.format``), each with explicit failure names (each tested):

- ``strict``: ``<think> reasoning </think> <answer> X </answer>`` with nothing but whitespace around.
- ``study``: the same blocks, but any text before ``<think>`` is allowed and reported in
  :attr:`ParsedCompletion.text_before_think` (the study's "step-by-step exploit" was rewarded, so its check
  accepted it); still nothing but whitespace between ``</think>`` and ``<answer>`` or after ``</answer>``.

Failures, in the order they are checked:

- no ``<think>``/``</think>`` pair, or no ``<answer>``/``</answer>`` pair → ``missing_tags``
- more than one think or answer block → ``multiple_blocks``
- the answer block before the think block, or tags nested/interleaved → ``wrong_order``
- non-whitespace text outside the blocks that the format does not allow → ``text_outside_tags``
- only whitespace inside ``<think>`` → ``empty_think``
- then the answer block is read by :func:`extract_letter` (its rules are listed there) → ``no_letter``,
  ``multiple_letters``, ``letter_outside_options`` or ``option_text``.

Model output is only ever handled as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
FORMATS = ("strict", "study")
# every failure name parse_completion can give, in the order the checks run
FORMAT_ERRORS = (
    "missing_tags",
    "multiple_blocks",
    "wrong_order",
    "text_outside_tags",
    "empty_think",
    "no_letter",
    "multiple_letters",
    "letter_outside_options",
    "option_text",
)

# A letter read as a choice is one capital standing alone: not followed by a letter, digit, hyphen or apostrophe.
_ALONE = r"(?![A-Za-z0-9'\-])"
# 1. the whole answer is one lower-case letter, optionally bracketed or followed by . ) :
_LOWER_ALONE = re.compile(r"^\(?([a-z])\)?[.):]?$")
# 2. the answer opens with a letter: "B", "(B)", "B.", "B)", "B:", "Option B", each alone or followed by text
_LEADING = re.compile(r"^(?i:(?:option|choice)\s+)?(?:\(([A-Z])\)(?=[\s.:]|$)|([A-Z])(?:[.):](?=\s|$)|$))")
# 3. a lead-in anywhere: "Answer: B", "The answer is B", "Final answer: (B)", "The correct option is B"
_LEAD_IN = (
    r"(?i:\b(?:final\s+|correct\s+|best\s+)?(?:answer|option|choice)(?:\s+is\b|\s*[:=])\s*"
    r"(?:option\s+|choice\s+)?)"
)
_LEAD_IN_LETTER = re.compile(_LEAD_IN + r"\(?([A-Z])\)?" + _ALONE)
# 4. the answer opens with the letter affirmed: "B is correct", "(B) is the answer", "Option B is the best choice"
_AFFIRMED = re.compile(
    r"^(?i:(?:option|choice)\s+)?\(?([A-Z])\)?\s+(?i:is)\s+(?i:the\s+)?"
    r"(?i:(?:correct|right|best)(?:\s+(?:answer|option|choice))?|answer)\b"
)
_LEAD_IN_ONLY = re.compile(r"^(?i:the\s+)?" + _LEAD_IN)
# Two or more letters joined only by separators: "A, C", "B or D", "A B C D E", "(A) and (C)"
_LIST_ITEM = r"\(?[A-Z]\)?[.):]?"
_SEPARATORS = r"(?:\s*(?:,|/|&|;|\bor\b|\band\b))+\s*"
_LIST_GAP = rf"(?:{_SEPARATORS}|\s+)"
_LETTER_LIST = re.compile(rf"^{_LIST_ITEM}(?:{_LIST_GAP}{_LIST_ITEM})+$")
_JOINED_PAIR = re.compile(rf"(?<![A-Za-z]){_LIST_ITEM}{_SEPARATORS}\(?[A-Z]\)?{_ALONE}")
_JOINED_NEXT = rf"{_SEPARATORS}\(?[A-Z]\)?{_ALONE}"
_LIST_CONTINUES = re.compile(rf"^\s*(?:{_JOINED_NEXT}|(?:{_LIST_GAP}{_LIST_ITEM})+\s*$)")


@dataclass(frozen=True)
class ParseRules:
    """How completions are read (``reward.format``, ``reward.match_option_text``; see the module docstring)."""

    format: str = "strict"
    match_option_text: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown completion format {self.format!r}: expected one of {', '.join(FORMATS)}")


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion says: its reasoning, its raw answer, the option letter, and why the format failed.

    ``outside_text`` is the disallowed text outside the blocks (on ``text_outside_tags``);
    ``text_before_think`` is whatever stands before ``<think>`` (allowed by the ``study`` format only).
    """

    think: str | None
    answer: str | None
    letter: str | None
    format_error: str | None
    outside_text: str = ""
    text_before_think: str = ""

    @property
    def format_ok(self) -> bool:
        return self.format_error is None


def _failure(
    reason: str, think: str | None = None, answer: str | None = None, outside: str = "", before: str = ""
) -> ParsedCompletion:
    return ParsedCompletion(think, answer, None, reason, outside_text=outside, text_before_think=before)


def normalise_option_text(text: str) -> str:
    """Case-folded, whitespace collapsed, without surrounding quotes, asterisks or trailing periods."""
    return " ".join(text.split()).strip("\"'*` ").rstrip(".").strip().casefold()


def option_text_letters(answer: str, options: Mapping[str, str]) -> list[str]:
    """Letters of the options whose text equals the answer (after an optional lead-in) once normalised."""
    text = " ".join(answer.split())
    lead_in = _LEAD_IN_ONLY.match(text)
    given = normalise_option_text(text[lead_in.end() :] if lead_in else text)
    return [letter for letter, option in options.items() if given and normalise_option_text(option) == given]


def stated_letters(answer: str) -> list[tuple[str, str]]:
    """``(letter, text after it)`` for each place the answer states a choice, by rules 1-4 of :func:`extract_letter`."""
    text = " ".join(answer.split())
    lower = _LOWER_ALONE.match(text)
    if lower:
        return [(lower.group(1).upper(), "")]
    stated = []
    leading = _LEADING.match(text)
    if leading:
        stated.append((leading.group(1) or leading.group(2), text[leading.end() :]))
    affirmed = _AFFIRMED.match(text)
    if affirmed:
        stated.append((affirmed.group(1), text[affirmed.end() :]))
    stated += [(m.group(1), text[m.end() :]) for m in _LEAD_IN_LETTER.finditer(text)]
    return stated


def extract_letter(
    answer: str, valid_letters: str, options: Mapping[str, str] | None = None, match_option_text: bool = False
) -> tuple[str | None, str | None]:
    """Return ``(letter, error)`` for the content of an answer block. Its whole rules:

    An answer states letter X (a capital not followed by a letter, digit, hyphen or apostrophe) when
      1. it is only that letter, in either case, optionally bracketed or followed by ``.``, ``)`` or ``:``:
         ``B``, ``b``, ``(B)``, ``B.``, ``B)``, ``B:``;
      2. it opens with the capital (optionally after ``Option``/``Choice``) as ``X.``, ``X)`` or ``X:``
         followed by whitespace, or as ``(X)``, then text: ``B. Iron``, ``(B) Iron``, ``B: Iron``, ``Option B``;
      3. anywhere in it, a lead-in (``answer``/``option``/``choice``, optionally after ``final``/``correct``/
         ``best``, then ``is``, ``:`` or ``=``, any case) is followed by the capital, optionally bracketed:
         ``Answer: B``, ``The answer is B``, ``Final answer: (B)``, ``I think the answer is B because ...``;
      4. it opens with the capital (optionally bracketed, after ``Option``/``Choice``) followed by ``is``, an
         optional ``the`` and ``correct``, ``right`` or ``best`` (optionally then ``answer``/``option``/
         ``choice``) or ``answer``: ``B is correct``, ``B is the answer``, ``Option B is the best choice``.
    Anything else names no choice: a capital used as a word (``A patient with ...``, ``I think ...``),
    negations (``not A``, ``A is wrong``, ``B is not correct``, ``The answer is not A``), lower case outside
    rule 1.

    With ``match_option_text`` (and the question's ``options``), an answer that is exactly one option's text
    after normalisation (case, whitespace, quotes, trailing period; an optional lead-in) chooses that option,
    before rules 1-4 are tried. Without it, such an answer is ``option_text`` (when options are given).

    Errors: two or more capitals joined only by separators (whitespace, ``,`` ``/`` ``&`` ``;`` ``or``
    ``and``: ``A, C``, ``B or D``, ``A B C D E``) or after a
    stated letter (``B, C``), or statements of different letters → ``multiple_letters``; a stated letter not
    among ``valid_letters`` → ``letter_outside_options``; otherwise no statement → ``no_letter``.
    """
    if match_option_text and options is None:
        raise ValueError("match_option_text needs the question's options to compare the answer with")
    text = " ".join(answer.split())
    matched = option_text_letters(text, options) if options is not None else []
    if match_option_text and matched:
        return (matched[0], None) if len(matched) == 1 else (None, "multiple_letters")
    if _LETTER_LIST.match(text) and len(set(re.findall(r"[A-Z]", text))) > 1:
        return None, "multiple_letters"
    stated = stated_letters(text)
    if any(_LIST_CONTINUES.match(rest) for _, rest in stated if rest.strip()):
        return None, "multiple_letters"
    letters = {letter for letter, _ in stated}
    if len(letters) > 1:
        return None, "multiple_letters"
    if letters:
        letter = letters.pop()
        return (letter, None) if letter in valid_letters else (None, "letter_outside_options")
    if matched:
        return None, "option_text"
    return None, "multiple_letters" if _JOINED_PAIR.search(text) else "no_letter"


def parse_completion(
    text: str, valid_letters: str, rules: ParseRules = ParseRules(), options: Mapping[str, str] | None = None
) -> ParsedCompletion:
    """Parse a full response (including any pre-filled ``<think>``) against its question's letters (and options)."""
    counts = {tag: text.count(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)}
    if min(counts.values()) == 0:
        return _failure("missing_tags")
    if max(counts.values()) > 1:
        return _failure("multiple_blocks")
    think_open, think_close = text.index(THINK_OPEN), text.index(THINK_CLOSE)
    answer_open, answer_close = text.index(ANSWER_OPEN), text.index(ANSWER_CLOSE)
    if not think_open < think_close < answer_open < answer_close:
        return _failure("wrong_order")
    think = text[think_open + len(THINK_OPEN) : think_close]
    answer = text[answer_open + len(ANSWER_OPEN) : answer_close]
    before = text[:think_open].strip()
    after = (text[think_close + len(THINK_CLOSE) : answer_open] + text[answer_close + len(ANSWER_CLOSE) :]).strip()
    outside = after if rules.format == "study" else " ".join(t for t in (before, after) if t)
    if outside:
        return _failure("text_outside_tags", think, answer, outside, before)
    if not think.strip():
        return _failure("empty_think", think, answer, before=before)
    letter, error = extract_letter(answer, valid_letters, options, rules.match_option_text)
    if error is not None:
        return _failure(error, think, answer, before=before)
    return ParsedCompletion(think, answer, letter, None, text_before_think=before)


def answer_block_letter(
    text: str, valid_letters: str, rules: ParseRules = ParseRules(), options: Mapping[str, str] | None = None
) -> str | None:
    """The option letter of the completion's single ``<answer>…</answer>`` block, whatever the rest of the format.

    None when there is not exactly one answer block or it names no single valid letter.
    """
    if text.count(ANSWER_OPEN) != 1 or text.count(ANSWER_CLOSE) != 1:
        return None
    start, end = text.index(ANSWER_OPEN) + len(ANSWER_OPEN), text.index(ANSWER_CLOSE)
    if end < start:
        return None
    letter, _ = extract_letter(text[start:end], valid_letters, options, rules.match_option_text)
    return letter
