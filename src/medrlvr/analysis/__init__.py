"""Reasoning-stage analysis: ``classifier`` (one completion), ``dynamics`` (iterations of a run), ``callback``
(logging during training), ``io`` (completion files), ``stage_report`` (plots and Markdown), ``stage_analysis``
(a run's or a file's analysis, ``python -m medrlvr.analyze``) and ``agreement`` (with labelled completions)."""
