"""Click commands of the ``kerasseg`` program (installed as ``kerasseg.cli``)."""
