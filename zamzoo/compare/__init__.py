"""`zamzoo compare`: an attention module against the zoo's baselines: its contract check (contract.py), its runs
through the zoo (runs.py), and the report of their statistics (stats.py, report.py)."""
