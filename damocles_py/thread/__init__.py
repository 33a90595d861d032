"""The sealing thread runtime (runtime.py) and what it reports to (observer.py)."""
