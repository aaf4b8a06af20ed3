"""Training: the plan, the shared step, evaluation and the loop."""
