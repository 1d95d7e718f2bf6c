"""kerasseg.export."""
