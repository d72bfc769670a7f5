"""Corruptions at the data's scale: the parameter sets, the numpy reference and the torch engine."""
