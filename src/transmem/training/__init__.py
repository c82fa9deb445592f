"""Training: the loop (engine.py; loop.py: the public train), scheduled sampling, run-folder conflicts and DDP."""
