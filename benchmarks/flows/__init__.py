"""Flows: the spline BG step against normflows."""
