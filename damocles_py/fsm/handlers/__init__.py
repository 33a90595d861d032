"""Stage handlers: the work done in each state of a plan (see fsm/plans.py)."""
