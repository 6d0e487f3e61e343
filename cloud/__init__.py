"""Cloud side of the kit."""
