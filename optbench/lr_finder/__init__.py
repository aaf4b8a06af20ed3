"""The LR range test: the loop, its suggestion rules, and its use inside training."""
