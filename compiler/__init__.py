"""hgen.compiler: datasets, models, compression operators, H-Gen search, metrics, lowering and bundles."""
