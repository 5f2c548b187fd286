"""The engine every stage shares: models (``modeling``), token ids and labels (``encoding``), base
samplers (``sampling``), new examples every round (``fresh``), the training loop (``training``),
a run's loaded data (``training_run``), metrics (``evaluation``) and the gradient features of all
three methods (``features``, ``gradients``, ``projection``)."""
