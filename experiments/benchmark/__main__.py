"""``python -m experiments.benchmark``: see the package docstring for the flags."""

from experiments.benchmark.cli import main

if __name__ == "__main__":
    main()
