"""The local engine: runs a workflow on one machine with real processes (`pennflow run`)."""
