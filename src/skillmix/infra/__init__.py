"""What jobs stand on and results never depend on the algorithms for: errors, config defaults from
the schema (``config``), logs and atomic writes (``jobs``), GPU leases (``gpus``), code versions
(``provenance``) and file-safe skill names (``slugs``). Nothing here is imported at package level:
the Snakefile imports ``provenance`` at parse time."""
