"""The backbone: what every optimizer shares (settings, generation, log-probs, reward, KL, truncation, budget
accounting, training loop, distribution, checkpoints). It imports nothing of the tasks, optimizers, evaluation
or application above it (tests/test_layers.py)."""
