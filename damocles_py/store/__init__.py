"""On-disk state: the thread database (thread_db.py) and file layouts (layout.py)."""
