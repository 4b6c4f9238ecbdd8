"""Reasoning-stage analysis: ``classifier`` (one completion), ``dynamics`` (iterations of a run), ``callback``
(logging during training), ``io`` (completion files) and ``report`` (plots and Markdown)."""
