"""Device side of the kit."""
