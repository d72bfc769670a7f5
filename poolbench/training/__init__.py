"""Training: the one loop (``loop``), how it runs here (``runtime.TrainSettings``, mixed
precision, data order, divergence watch), resume checkpoints (``checkpoint``) and the
evaluation of trained models (``evaluate``)."""
