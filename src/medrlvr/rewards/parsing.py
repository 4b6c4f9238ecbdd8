"""The one parser of completions, shared by the rewards and the evaluator.

Expected shape: ``<think> reasoning </think> <answer> X </answer>`` with nothing but whitespace around.
Explicit rules (each tested):

- no ``<think>``/``</think>`` pair, or no ``<answer>``/``</answer>`` pair → ``missing_tags``
- more than one think or answer block → ``multiple_blocks``
- the answer block before the think block, or tags nested/interleaved → ``wrong_order``
- non-whitespace text before ``<think>`` or after ``</answer>`` → ``text_outside_tags``
- only whitespace inside ``<think>`` → ``empty_think``
- the answer names no option letter → ``no_letter``; two or more letters (``A, C``, ``A or B``) →
  ``multiple_letters``; a letter that is not one of the question's options → ``letter_outside_options``

An answer may be ``B``, ``(B)``, ``B.``, ``B)``, ``B:`` or a letter followed by its option text
(``B. Aortic stenosis``); letters must be upper case. Model output is only ever handled as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_LETTER_AT_START = re.compile(r"^\(?([A-Z])(?:[\.\):]|\s|$)")
_STANDALONE_LETTER = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion says: its reasoning, its raw answer, the option letter, and why the format failed."""

    think: str | None
    answer: str | None
    letter: str | None
    format_error: str | None
    outside_text: str = ""

    @property
    def format_ok(self) -> bool:
        return self.format_error is None


def _failure(reason: str, think: str | None = None, answer: str | None = None, outside: str = "") -> ParsedCompletion:
    return ParsedCompletion(think=think, answer=answer, letter=None, format_error=reason, outside_text=outside)


def extract_letter(answer: str, valid_letters: str) -> tuple[str | None, str | None]:
    """Return ``(letter, error)`` for the content of an answer block."""
    text = answer.strip()
    start = _LETTER_AT_START.match(text)
    if start is None:
        letters = _STANDALONE_LETTER.findall(text)
        if not letters:
            return None, "no_letter"
        if len(set(letters)) > 1:
            return None, "multiple_letters"
        letter = letters[0]
    else:
        letter = start.group(1)
        rest = text[start.end() :]
        other = {m for m in _STANDALONE_LETTER.findall(rest) if m in valid_letters and m != letter}
        if other and _looks_like_letter_list(rest):
            return None, "multiple_letters"
    if letter not in valid_letters:
        return None, "letter_outside_options"
    return letter, None


def _looks_like_letter_list(rest: str) -> bool:
    """True when text after the first letter continues a list of letters (``, C``, `` or B``, `` B C D``)."""
    joined = re.match(r"^\s*(?:,|/|&|\bor\b|\band\b)\s*\(?[A-Z]\b", rest) is not None
    only_letters = re.fullmatch(r"(?:\s*(?:,|/|&|or|and)?\s*\(?[A-Z]\)?\.?)+\s*", rest) is not None
    return joined or only_letters


def parse_completion(text: str, valid_letters: str) -> ParsedCompletion:
    """Parse a full response (including any pre-filled ``<think>``) against the option letters of its question."""
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
    outside = (text[:think_open] + text[think_close + len(THINK_CLOSE) : answer_open] + text[answer_close + len(ANSWER_CLOSE) :]).strip()
    if outside:
        return _failure("text_outside_tags", think, answer, outside)
    if not think.strip():
        return _failure("empty_think", think, answer)
    letter, error = extract_letter(answer, valid_letters)
    if error is not None:
        return _failure(error, think, answer)
    return ParsedCompletion(think=think, answer=answer, letter=letter, format_error=None)


def answer_block_letter(text: str, valid_letters: str) -> str | None:
    """The option letter of the completion's single ``<answer>…</answer>`` block, whatever the rest of the format.

    None when there is not exactly one answer block or it names no single valid letter.
    """
    if text.count(ANSWER_OPEN) != 1 or text.count(ANSWER_CLOSE) != 1:
        return None
    start, end = text.index(ANSWER_OPEN) + len(ANSWER_OPEN), text.index(ANSWER_CLOSE)
    if end < start:
        return None
    letter, _ = extract_letter(text[start:end], valid_letters)
    return letter
