"""Training: the loop (loop.py) and what it is built of (setup.py), its one step (step.py) and
that step in a CUDA graph (cuda_graph.py), scheduled sampling, DDP, and the machine's threads."""
