"""The configurations, shipped inside the package as harness.conf (Hydra reads the YAML files beside this)."""
