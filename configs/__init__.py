"""optbench's Hydra configs, shipped inside the package as `optbench.configs`."""
