"""Data selection: from a pool of candidate examples, the ones to train on for a target, and how
training on them does on the target.

Every method has the same roles: a selector (:class:`skillmix.selection.selector.Selector`, one
module per method, registered in :data:`skillmix.infra.registry.SELECTIONS`) and whatever its
`needs` make before it selects.

- The data: ``pool`` (the candidates, the warm-up subset), ``targets`` (the target and its
  evaluation examples).
- The selectors: ``selector`` (the contract, the selection's size), ``less`` (LESS: top influence),
  ``random`` (the baseline: as many at random), ``ranking`` (top-k and balanced turns, shared).
- What LESS needs: ``epochs`` (LoRA training in whole epochs, the shared recipe), ``warmup`` (the
  warm-up and its epoch checkpoints), ``datastore`` and ``shards`` (projected Adam gradient
  features of candidates and target), ``influence`` (their scores against the target).
- After selection: ``selected`` (a selection's composition and files), ``train_selected``
  (training on a selection), ``evaluation`` (how the trained model does on the target).
"""
