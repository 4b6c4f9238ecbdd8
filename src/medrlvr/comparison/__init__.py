"""Base vs SFT vs RLVR, in and out of distribution, over seeds, from MLflow runs (``python -m medrlvr.compare``):
selecting and measuring the runs (:mod:`.measurements`), statistics, tables and plot (:mod:`.summary`), one
comparison end to end (:mod:`.run`).

Reads the finished runs of ``experiments`` (default ``medrlvr``) and ``run_ids`` in ``tracking_uri``
(default ``sqlite:///$PWD/mlflow.db``), with the evaluation runs nested under them:

- a training run (``python -m medrlvr.train``) evaluates each of its sets (``data/eval_split``, ``data/ood_split``
  with ``trainer.eval_ood=true``, each of ``data.eval_sets``; data and split in its ``eval_set/<set>/*`` params)
  as ``eval/<set>/*``: the value at step 0 (from the metric's history) measures the base model, the value at
  the run's last step after 0 the trained one. The trained method is ``SFT`` when ``algo/name`` is ``sft``, else
  ``RLVR (<algo/name>)``;
- an evaluation run (``python -m medrlvr.evaluate``) measures ``<dataset>/*`` on each dataset's split: the
  ``base`` model without a checkpoint, else the method of the training run it is nested under
  (``parent_run_id``); prompted with ``data.prompt.style=direct`` (answer without reasoning), the method
  gets `` (direct)``: ``base (direct)`` next to ``base``, the base model prompted to reason (CoT).

A dataset (``<data name>/<split>``) is in distribution (ID) when a training run trained on that data and it is
not the data's ``ood_split``; otherwise out of distribution (OOD) (``in_distribution`` overrides). Each cell (model, method, dataset,
number of questions) holds one value per seed — the training run's ``seed``; when two runs share a seed the
latest is kept, with a note unless both measure the base model alike (every training run of a seed
measures it again) — and reports their mean and, from two seeds on, a t-distribution
confidence interval. Prints the table and writes ``compare.md``, ``compare.csv``, ``compare.json`` and
``compare.png`` (bars with the intervals) to the output folder.
"""
