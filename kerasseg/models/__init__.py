"""kerasseg.models."""
