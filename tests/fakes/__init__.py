"""Test doubles of external services (a fake Pennsieve server) and the fixtures that start them."""
