"""Sealing state machines: states and events (states.py), one transition table per plan (plans.py),
failure causes (failure.py) and the persisted sector record (sector.py)."""
