"""P⁴ layers: training-step cost, its floors, accuracy drift."""
