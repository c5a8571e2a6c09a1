"""Energies: OpenMM worker throughput, TorchEnergy throughput (CPU and GPU) and accuracy."""
