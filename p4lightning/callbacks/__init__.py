"""Lightning callbacks: ``P4MergeCallback`` runs ``p4lightning.p4``'s merge schedule in ``Trainer.fit``;
``BoltzmannFigures`` writes a Boltzmann-generator run's figures and summary; ``FinalStepCheckpoint`` keeps
``last.ckpt`` at the final step and, with ``AtomicCheckpointIO``, writes every checkpoint atomically."""

from p4lightning.callbacks.bg_figures import BoltzmannFigures
from p4lightning.callbacks.checkpoint import AtomicCheckpointIO, FinalStepCheckpoint
from p4lightning.callbacks.merge import P4MergeCallback

__all__ = ["AtomicCheckpointIO", "BoltzmannFigures", "FinalStepCheckpoint", "P4MergeCallback"]
