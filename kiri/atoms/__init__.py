"""One module per atom: what it observes (its collector) and how it tokenizes (its schema)."""
