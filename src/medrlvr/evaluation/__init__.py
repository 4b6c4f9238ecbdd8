"""Evaluating a policy: scoring it on MCQA examples (:mod:`.policy`) and the evaluation of a saved checkpoint
or base model on named datasets that ``python -m medrlvr.evaluate`` runs (:mod:`.checkpoint`)."""
