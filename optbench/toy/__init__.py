"""`optbench toy`: optimizer paths over 2-D test functions, the classic optimizer pictures.

functions (the test functions) -> trajectories (running the optimizers) -> plot (PNG/GIF);
command holds the Hydra task and its config check.
"""
