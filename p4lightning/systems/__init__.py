"""Molecular systems: alanine dipeptide, the OpenMM energy op and its workers, coordinate transforms."""
