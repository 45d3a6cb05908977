"""`python -m pennflow.cli`: the same entry point as the `pennflow` console script."""

from pennflow.cli import main

main()
