"""`optbench report`: compare the runs of one or more sweeps, seed by seed and method by method.

runs (find and read run directories) -> groups (swept keys, one group per setting, seed
statistics) -> targets (time to a target accuracy) -> tables, plots, profiles -> command.
"""
