"""kerasseg.training."""
