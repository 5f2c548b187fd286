"""Skills graphs (Chen et al., NeurIPS 2023; docs/methods/skillit.md#skills-graph): learn one from
short training runs, or load a published one.

A skills graph ``A`` has one row per training skill (source) and one column per evaluation skill
(target); ``A[i, j]`` is how much training on skill ``i`` lowers the validation loss of skill ``j``
(signed: positive helps, negative interferes).

A graph is learned from short training runs, "units", each of which records the validation loss of
every skill over its steps (a curve: columns ``unit``, ``step``, ``skill``, ``loss``; step 0 is the
initial model). Units are named by skill slugs: ``slug_i`` trains on skill ``i`` alone and
``slug_i__slug_j`` (``i`` before ``j`` in skill order) on an equal mix of ``i`` and ``j``.

- ``brute_force`` (Alg. 2): k single runs and k(k-1)/2 pair runs.
- ``linear`` (Alg. 3): k single runs.
- ``gradient`` (docs/methods/entk.md#gradient-graph): inner products of mean skill gradients at
  existing checkpoints, no runs (``skillmix.graph.gradient``).
- ``given``: a ``.npy`` matrix with its skill order; values are used exactly as stored (a user's
  graph is never rescaled; scaling a binary graph is the explicit ``binary_edge_weight`` option of
  learned graphs only).

The package keeps each part in its own module, so that a job imports only what it runs:

- ``units``: unit names; no dependencies, the one module the Snakefile imports.
- ``unit_runs``: the graph_run job: one unit's short training run(s) and its curve.
- ``options``: the ``graph.assemble`` options and the post-processing they apply.
- ``learned``: the losses of each unit and assembly of the brute-force and linear graphs.
- ``gradient``: the gradient graph.
- ``given``: published graphs.
- ``store``: the graph folder's files and reading them (no matplotlib: the Skill-It training job
  reads its graph with it).
- ``writing``: writing a graph folder; ``heatmap``: its heatmap.png (matplotlib), drawn only by
  the jobs that write a graph.
"""
