"""Molecular systems: alanine dipeptide, the energy contract and its two implementations (TorchEnergy, the default;
OpenMM workers, the reference), coordinate transforms."""
