"""Interactive notebook sessions: a Jupyter server run as a pennflow run, with layers mounted read-only."""
