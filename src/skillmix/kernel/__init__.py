"""The eNTK view of fine-tuning (entk.md): ``task`` (the prompt-based task), ``task_kernels``
(its label-word gradient features, the kernels from them, the solvers' accuracy), ``finetuning``
(fine-tuning on the task, the initial model, the solvers next to fine-tuning) and ``kernels``
(kernel formulas, label words and solvers)."""
