"""The compute node's runtime: run lifecycle, slots, task definitions, tracking, finalize, built-in tasks,
the workflows registry, and the client the CLI uses to reach a node."""
