"""``python -m experiments``: the experiments and tools, as ``jaxnn list`` prints them."""

from jaxnn.console import main

main(["list"])
