"""Scripts run by the TARGET env's Python (never imported by pytest): each prints one JSON line."""
