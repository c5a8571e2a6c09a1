"""Boltzmann generators: the paper-size step, the mixed-transform inverse, thread policy with workers."""
