"""Examples in, slices out: the example sources (``sources``), their examples checked and split per
skill (``splitting``), the train/val/test slice files with their manifest, written and read back
checked (``slicing``; the slice rule); chat examples (``chat``) and examples in the formats
fine-tuning libraries read (``export``)."""
