"""ka-status: the fleet from the repository, and the fleet as it runs."""
