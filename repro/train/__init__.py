"""The loops: pre-training (and its one step), the probes, fine-tuning, checkpoints, and the helpers they share."""
