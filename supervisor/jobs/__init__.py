"""Jobs: what the node knows of each one, admission (202 or 429), the queue and the dispatch to the worker."""
