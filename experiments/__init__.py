"""Experiment modules: each has get_config() and runs as ``python -m experiments.<name>``."""
