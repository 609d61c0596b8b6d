"""results.json: its schema, reading and writing."""
