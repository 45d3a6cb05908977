"""Thin Lambda handlers: parse the event, call one function of ``pennflow``, return."""
