"""A run's lifecycle (lifecycle.py: the public train), above the training loop and transfer:
refusing bad configs, taking the folder (conflicts.py, resume.py), ranking the sources
(ranking.py), training and saving (folder_run.py, records.py)."""
