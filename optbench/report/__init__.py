"""`optbench report`: compare the runs of one or more sweeps, seed by seed and method by method.

runs (find and read run directories) -> groups (swept keys, one group per setting, seed
statistics) -> targets (time to a target of the main validation metric) -> profiles and scores, sensitivity
-> tables, plots -> command.
"""
