"""``ka host add``: a new fleet host from what the board itself says."""
