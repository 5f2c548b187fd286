"""Examples in, slices out: the example sources (``sources``) and the per-skill train/val/test
slices with their manifest (``slicing``; the slice rule); chat examples (``chat``)."""
