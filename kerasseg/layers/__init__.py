"""kerasseg.layers."""
