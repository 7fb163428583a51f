"""lossbench harness: config, data loading, models, training, metrics and results I/O."""
__version__ = "0.1.0"
