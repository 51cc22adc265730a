"""Training and transfer: the one training loop, its recipes and step budget, the held-out choice of
hyperparameters, the probes on frozen features (linear, k-NN, the dense segmentation head),
checkpoints, and the metrics of what was trained (classification, robustness, segmentation)."""
