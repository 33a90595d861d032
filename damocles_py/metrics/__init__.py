"""Prometheus metrics of the worker (worker.py) and the manager (manager.py)."""
