"""The state of one output folder (SQLite): plans, attempts, ends, the request cache."""
