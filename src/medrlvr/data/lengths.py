"""Questions longer than the model: a prompt plus the tokens generated after it must fit in the model's context.

Checked when the data is loaded, before an MLflow run is opened: a question that does not fit is refused naming
it, or left out under ``data.skip_long_prompts=true`` with a warning that lists what was left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from medrlvr.data.schema import DatasetError, MCQExample

log = logging.getLogger(__name__)
MAX_LOGGED_IDS = 10


def fit_to_context(
    examples: list[MCQExample],
    prompt_tokens: Callable[[MCQExample], int],
    context: int,
    new_tokens: int,
    new_tokens_key: str,
    skip: bool,
) -> list[MCQExample]:
    """``examples`` whose prompt (``prompt_tokens``) plus ``new_tokens`` fit in ``context`` tokens.

    A question that does not fit raises :class:`DatasetError` naming its dataset and id, unless ``skip``: then
    such questions are left out with a warning (and DatasetError if none is left).
    """
    kept: list[MCQExample] = []
    too_long: list[tuple[MCQExample, int]] = []
    for example in examples:
        length = prompt_tokens(example)
        if length + new_tokens <= context:
            kept.append(example)
        elif not skip:
            raise DatasetError(
                example.source, None, None,
                f"question {example.id}: prompt of {length} tokens + {new_tokens_key}={new_tokens} exceeds the"
                f" model's context of {context} tokens (set data.skip_long_prompts=true to leave such questions out)",
            )
        else:
            too_long.append((example, length))
    if too_long:
        ids = ", ".join(f"{example.id} ({length} tokens)" for example, length in too_long[:MAX_LOGGED_IDS])
        more = f" ... ({len(too_long) - MAX_LOGGED_IDS} more)" if len(too_long) > MAX_LOGGED_IDS else ""
        log.warning(
            "%s: left out %d of %d question(s) longer than the model's context of %d tokens with %s=%d"
            " (data.skip_long_prompts=true): %s%s",
            too_long[0][0].source, len(too_long), len(examples), context, new_tokens_key, new_tokens, ids, more,
        )
    if examples and not kept:
        raise DatasetError(examples[0].source, None, None, f"no question fits the model's context of {context} tokens")
    return kept
