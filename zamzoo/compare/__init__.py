"""`zamzoo compare`: a module's contract check, its runs against the baselines, and the report of their statistics."""
