"""The compute node's REST API: request/response models and the logic behind each route.

The Lambda handler (``lambdas/api.py``) only declares the routes and wires the ports (run store,
workflow registry, run launcher and canceller); everything a route decides is here, testable
without AWS.
"""
