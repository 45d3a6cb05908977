"""Layers: named folders filled once and mounted read-only into the runs that ask for them.

Kept free of imports on purpose: ``build`` runs inside the layer-build image with the standard
library only, and the AWS adapters are imported only by the AWS side.
"""
