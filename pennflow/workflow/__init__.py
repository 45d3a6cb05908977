"""The pure workflow core: definitions, graph checks, plans, the compiler, the processor contract, run states.

It imports nothing of AWS, the local engine or the node (checked by import-linter)."""
