"""kerasseg.data.readers."""
