"""Tasks, sequences and their data: families, the registry, the local mirror, the Hub, encoding."""
