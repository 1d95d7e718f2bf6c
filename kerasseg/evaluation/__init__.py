"""kerasseg.evaluation."""
