"""LESS (less.md): the candidate pool and the targets, the LoRA warm-up, the gradient datastore,
influence scores and the top-k selection, and training on what was selected.

``targets`` (target and evaluation sets), ``pool`` (candidates, the warm-up subset), ``warmup``
(epoch training with LoRA and its checkpoints, also for the selected data), ``datastore`` and
``shards`` (projected Adam gradient features), ``influence`` (scores against the targets),
``selection`` (top-k, random baseline, the selected data and its evaluation).
"""
