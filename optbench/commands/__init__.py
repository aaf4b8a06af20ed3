"""One module per `optbench` subcommand: check the input, run, print; `optbench.cli` picks one."""
