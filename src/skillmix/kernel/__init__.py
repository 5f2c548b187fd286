"""The eNTK view of fine-tuning (entk.md): ``task`` (the prompt-based task, feature and kernel jobs,
solving, fine-tuning side by side) and ``kernels`` (kernel formulas, label words and solvers)."""
