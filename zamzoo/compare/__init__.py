"""`zamzoo compare`: a user's attention module against the zoo's baselines (contract check, runs, report)."""
