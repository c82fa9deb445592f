"""Training: the loop, scheduled sampling, checkpoints, run folders and DDP."""
