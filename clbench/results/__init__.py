"""A run's results: `schema` (results.json as `Results`), `io` (a run's files), `load` (results
files into a table of runs), `compare` (which runs may be averaged), `stats` (intervals, tests)."""
