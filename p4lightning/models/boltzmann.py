r"""``BoltzmannGenerator``: a normalizing flow trained on MD data and on the force field's energy (paper Sect. 4.3, App. E, H).

Generation: :math:`\mathbf{z} \sim \mathcal{N}(0, \mathbf{I}_{60})` → flow → mixed-coordinate inverse → positions
:math:`\mathbf{x}` (nm). Write :math:`F_{zx}` for that map and :math:`F_{xz}` for its inverse, and
:math:`R_{zx}, R_{xz}` for their log-Jacobian determinants (summed ``ladj``). The loss (App. E, eq. 6) is

.. math::
    J = w_l J_l + w_e J_e, \quad
    J_l = \mathbb{E}_{\mathbf{x}\sim\text{data}}\big[\tfrac12\|F_{xz}(\mathbf{x})\|^2 - R_{xz}(\mathbf{x})\big], \quad
    J_e = \mathbb{E}_{\mathbf{z}}\big[u_\text{reg}(F_{zx}(\mathbf{z})) - R_{zx}(\mathbf{z})\big],

with :math:`u = E / k_B T` the reduced OpenMM energy, regularised (linear, then logarithmic, capped), and
:math:`w_l + w_e = 1`; plus the P⁴ penalty of every P⁴ module when enabled. The paper's two-phase schedule
(App. H) is expressed by ``energy_phase_start``: from that optimizer step on, the learning rate becomes
``energy_lr`` and :math:`w_e / w_l` becomes ``energy_weight_ratio``; before it, :math:`w_e = 0` and no energy is
evaluated. Only P⁴Inv layers get P⁴ updates (via :class:`~p4lightning.P4MergeCallback`); everything else
trains directly.

**Flows.** ``flow="realnvp"`` is the paper's (App. H; ``mixing`` ``"p4inv"`` or ``"swap"``), ``flow="spline"`` a
rational-quadratic spline flow (:func:`~p4lightning.flows.blocks.spline_flow`; ``mixing`` ``"p4inv"``, ``"mask"`` or
``"lu"``). With ``circular_torsions="proper"`` the proper torsions (rotors, φ, ψ, ω) are angles in
:math:`[-\pi, \pi)` and the narrow sibling torsions standardised reals (FAB's choice); with ``"all"`` every torsion
is an angle. The spline flow treats angles with circular splines over a uniform base, so :math:`\ln q` is the
density of the conformation and no sample leaves the principal branch of a circular torsion; the RealNVP flow
ends in :class:`~p4lightning.flows.squash.AngleSquash` (:math:`\theta = \pi\tanh t`), a bijection onto the
open branch, for the same guarantee. On the circle a narrow sibling torsion must be squeezed out of the
uniform base, and the samples that leak to its mirror offset are a swapped pair of methyl hydrogens — same energy,
tiny :math:`q`, huge weight (:mod:`p4lightning.systems.observables`; measured in docs/spline_bg/README.md).

**Energy-based training** (from ``energy_phase_start`` on), with the field's safeguards: the highest
``energy_drop_fraction`` of each batch's energies are dropped from :math:`J_e` (TA-BG), energies above
``energy_high`` grow logarithmically and are capped at ``energy_max`` (the lin-log cut), a capped or non-finite
energy contributes zero gradient (Note [zero weight, zero gradient] in the energy ops), gradient-norm clipping is
the ``Trainer``'s ``gradient_clip_val``, and ``lr_schedule="cosine"`` decays each phase's learning rate to 0 at
its end. The maximum-likelihood term stays in the loss (:math:`w_l > 0`): a forward-KL anchor that keeps the
minor (φ ≥ 0) basin, which reverse KL alone would drop.

**Importance-weighted forward KL** (``iw_forward_weight`` :math:`\lambda > 0`, the energy phase's mass-covering
term, as TA-BG and CMT use): with the step's generated samples :math:`\mathbf{x}_i \sim q` held fixed and
self-normalised weights :math:`\bar w_i \propto \exp(-u_i - \ln q(\mathbf{x}_i))` over the kept samples of MD's
labeling,

.. math::
    J_\text{iw} = -\sum_i \bar w_i \ln q_\theta(\mathbf{x}_i) \approx \mathrm{KL}(p \,\|\, q_\theta) + \text{const},

added as :math:`w_e (J_e + \lambda J_\text{iw})`. Reverse KL barely moves :math:`q` where it puts little mass; a
sample that lands there has a large :math:`\bar w_i` and pulls :math:`q` up (measured in docs/spline_bg/).
``iw_clip_fraction`` clips the largest log weights of each batch to the quantile below them (variance control).
``init_checkpoint`` starts a stage from another run's
trained weights (e.g. the energy stage from the best maximum-likelihood checkpoint).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch

from p4lightning._validation import (
    as_floating_dtype,
    check_features,
    check_literal,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)
from p4lightning.flows.blocks import RealNVPMixing, SplineMixing, realnvp_flow, spline_flow
from p4lightning.flows.distribution import FlowDistribution
from p4lightning.flows.priors import NormalUniformPrior
from p4lightning.flows.sequential import StandardNormal
from p4lightning.metrics.draw import draw
from p4lightning.metrics.sampling import EffectiveSampleSize, EnergyStatistics, RamachandranKL
from p4lightning.models.compile_safe import CompileSafeLightningModule
from p4lightning.p4.protocol import find_p4_modules
from p4lightning.systems.alanine import (
    CARTESIAN_ATOMS,
    N_ATOMS,
    SIBLING_TORSION_ATOMS,
    Z_MATRICES,
    alanine_dipeptide,
    check_topology,
)
from p4lightning.systems.energy import regularize_energy
from p4lightning.systems.mixed import MixedCoordinateTransform
from p4lightning.systems.observables import has_labeling, phi_psi, reference_labeling
from p4lightning.systems.protocol import EnergyKind, ReducedEnergy, energies, make_energy

__all__ = ["BoltzmannGenerator"]

FlowKind = Literal["realnvp", "spline"]
ZMatrixName = Literal["backbone", "standard"]  # the keys of systems.alanine.Z_MATRICES (a test holds them equal)
CircularTorsions = Literal["none", "proper", "all"]
LRSchedule = Literal["constant", "cosine"]


# purposes of the seeded generators (BoltzmannGenerator.generator)
_TRAIN_SAMPLES, _VAL_SAMPLES = 1, 2


class BoltzmannGenerator(CompileSafeLightningModule):
    r"""Boltzmann generator for alanine dipeptide: the paper's RealNVP flow (default) or a spline flow.

    Args:
        mixing: between couplings. RealNVP: ``"p4inv"`` (P⁴Inv swaps) or ``"swap"`` (the baseline); spline:
            ``"p4inv"``, ``"mask"`` (nothing learned) or ``"lu"`` (LU-parametrised linear).
        n_blocks: RealNVP flow blocks (paper: 25).
        hidden: hidden sizes of the RealNVP ``t``/``s`` networks (paper: ``[60, 60]``) or of the spline
            conditioners (default ``[256, 256]``).
        flow: ``"realnvp"`` (paper) or ``"spline"``.
        n_couplings: spline couplings (even).
        bins: spline bins.
        z_matrix: ``"backbone"`` (the first Z-matrix of this project, every torsion along bonds to backbone atoms) or
            ``"standard"`` (the literature's sibling-relative one); see :mod:`p4lightning.systems.alanine`.
        circular_torsions: ``"none"``, ``"proper"`` (rotors, φ, ψ, ω on the circle; sibling torsions standardised)
            or ``"all"`` (``True`` / ``False`` of earlier checkpoints mean ``"all"`` / ``"none"``); the spline flow
            uses circular splines, RealNVP an :class:`~p4lightning.flows.squash.AngleSquash`.
        lr: Adam learning rate of the density-estimation phase (paper: 1e-3).
        weight_decay: decoupled weight decay (AdamW; 0: Adam's update exactly).
        lr_schedule: ``"constant"`` or ``"cosine"`` (each phase decays from its learning rate to 0 at its end; the
            energy phase ends at the trainer's ``max_steps``).
        energy_drop_fraction: fraction of each energy batch with the highest energies left out of :math:`J_e`.
        iw_forward_weight: :math:`\lambda`, the weight of the importance-weighted forward KL :math:`J_\text{iw}`
            relative to :math:`J_e` in the energy phase (0: not computed).
        iw_clip_fraction: fraction of each batch's largest log weights clipped to the next one's in
            :math:`J_\text{iw}` (0: none).
        init_checkpoint: a checkpoint whose model weights (transform, flow) this model starts from when it is
            fitted from scratch (read in ``setup``; a model loaded from its own checkpoint ignores it); its
            architecture options must match.
        energy_phase_start: optimizer step at which the energy phase begins (``None``: never).
        energy_lr: learning rate of the energy phase (paper: 1e-5).
        energy_weight_ratio: :math:`w_e / w_l` in the energy phase (paper: 0.05).
        energy_batch_size: prior samples per step for :math:`J_e`.
        temperature: K of the target density (default: the data's, 600 K).
        energy_high: :math:`u_\text{high}` (k_BT) of the energy regularisation.
        energy_max: :math:`u_\text{max}` (k_BT) of the energy regularisation.
        energy_workers: OpenMM worker processes per rank (default: usable cores; ``energy="openmm"`` only).
        energy_platform: OpenMM platform of the workers (``energy="openmm"`` only).
        p4_penalty_weight: :math:`C_p` of every P⁴Inv layer (paper: 0 for the BG).
        bookkeeping_dtype: dtype of P⁴Inv's A, A⁻¹, log|det| (``"float64"``; default: the parameters').
        n_eval_samples: generated samples per validation for the energy, ESS and torsion metrics.
        energy: ``"torch"``: :class:`~p4lightning.systems.torch_energy.TorchEnergy`, batched on the model's
            device, the same numbers as OpenMM (float64 to ~1e-14); ``"openmm"``: OpenMM worker processes
            (the reference, and the fallback for systems TorchEnergy does not support).
        compile: ``torch.compile`` the density-estimation pass (transform, flow inverse, log-density) and, with
            ``energy="torch"``, the training step's energy.
        seed: seed of the generated samples (energy phase and validation). Each draw uses a generator seeded
            by ``(seed, rank, global step, purpose)``, so there is no RNG state to lose: a resumed run draws
            exactly the samples of the uninterrupted one, and every DDP rank draws its own.

    Reduced energies are of the unconstrained ``AlanineDipeptideImplicit`` system (Amber ff96, OBC1) at
    ``temperature``.
    """

    def __init__(
        self,
        mixing: Literal[RealNVPMixing, SplineMixing] = "p4inv",
        n_blocks: int = 25,
        hidden: list[int] | None = None,
        flow: FlowKind = "realnvp",
        n_couplings: int = 8,
        bins: int = 8,
        z_matrix: ZMatrixName = "backbone",
        circular_torsions: CircularTorsions | bool = "none",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = "constant",
        energy_drop_fraction: float = 0.0,
        iw_forward_weight: float = 0.0,
        iw_clip_fraction: float = 0.0,
        init_checkpoint: str | None = None,
        energy_phase_start: int | None = None,
        energy_lr: float = 1e-5,
        energy_weight_ratio: float = 0.05,
        energy_batch_size: int = 256,
        temperature: float = 600.0,
        energy_high: float = 1e3,
        energy_max: float = 1e9,
        energy_workers: int | None = None,
        energy_platform: str = "CPU",
        p4_penalty_weight: float = 0.0,
        bookkeeping_dtype: Literal["float32", "float64"] | None = None,
        n_eval_samples: int = 512,
        energy: EnergyKind = "torch",
        compile: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_positive(lr, "lr")
        check_positive(energy_lr, "energy_lr")
        if energy_phase_start is not None:
            check_nonnegative_int(energy_phase_start, "energy_phase_start")
        if not energy_weight_ratio >= 0:
            raise ValueError(f"energy_weight_ratio must be >= 0; got {energy_weight_ratio}")
        check_positive_int(energy_batch_size, "energy_batch_size")
        check_positive(temperature, "temperature")  # K
        check_positive_int(n_eval_samples, "n_eval_samples")
        check_nonnegative_int(seed, "seed")
        check_literal(energy, EnergyKind, "energy")
        check_literal(flow, FlowKind, "flow")
        check_literal(mixing, RealNVPMixing if flow == "realnvp" else SplineMixing, f"mixing of flow={flow!r}")
        check_literal(z_matrix, ZMatrixName, "z_matrix")
        check_literal(lr_schedule, LRSchedule, "lr_schedule")
        if isinstance(circular_torsions, bool):  # checkpoints written before the choice had names
            circular_torsions = "all" if circular_torsions else "none"
        check_literal(circular_torsions, CircularTorsions, "circular_torsions")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")
        if not 0 <= energy_drop_fraction < 1:
            raise ValueError(f"energy_drop_fraction must be in [0, 1); got {energy_drop_fraction}")
        if not iw_forward_weight >= 0:
            raise ValueError(f"iw_forward_weight must be >= 0; got {iw_forward_weight}")
        if not 0 <= iw_clip_fraction < 1:
            raise ValueError(f"iw_clip_fraction must be in [0, 1); got {iw_clip_fraction}")
        p4_kwargs: dict[str, Any] = {"penalty_weight": p4_penalty_weight, "check_inputs": False}
        p4_kwargs["bookkeeping_dtype"] = as_floating_dtype(bookkeeping_dtype, "bookkeeping_dtype")
        rows = Z_MATRICES[z_matrix]
        circular: bool | list[int] = {
            "none": False, "all": True,
            "proper": [r[0] for r in rows if r[0] not in SIBLING_TORSION_ATOMS[z_matrix]],
        }[circular_torsions]  # fmt: skip
        self.transform = MixedCoordinateTransform.empty(N_ATOMS, CARTESIAN_ATOMS, rows, torch.float32, circular)
        dim, circular_indices = self.transform.dim, self.transform.circular_indices
        if flow == "realnvp":
            self.flow = realnvp_flow(
                dim, n_blocks, hidden or [60, 60], mixing, p4_kwargs, n_angles=len(circular_indices),  # type: ignore[arg-type]
            )  # fmt: skip
            self.prior: StandardNormal | NormalUniformPrior = StandardNormal(dim)
        else:
            n_circular = len(circular_indices)
            self.flow = spline_flow(
                dim, n_circular, n_couplings, hidden or [256, 256], bins, mixing=mixing,  # type: ignore[arg-type]
                p4inv_kwargs=p4_kwargs,
            )  # fmt: skip
            self.prior = NormalUniformPrior(dim, circular_indices)
        # flow + prior as one distribution over the flow coordinates y (60-d), held outside the module tree: it
        # references self.flow and self.prior, whose state_dict keys stay flow.…, prior.… (the shipped checkpoints')
        object.__setattr__(self, "distribution", FlowDistribution(self.flow, self.prior))
        self._p4_modules = [m for _, m in find_p4_modules(self.flow)]  # found once, not on every step
        # the reduced-energy op, built per process in setup(): a resource, not model state, so held outside the
        # module tree (see __setattr__; no energy.… keys in state_dict); it follows the model's device (_apply)
        self.energy: ReducedEnergy | None = None
        self._log_density_fn = self.log_density  # torch.compile-d in setup() when compile=True
        self._energy_fn: Any = None  # the training step's energy: TorchEnergy compiled in setup() when compile=True
        # max reduced energy of the training data: the paper's low-energy threshold (set in setup)
        self.register_buffer("data_energy_max", torch.tensor(float("nan")))
        # cumulative count of generated training samples whose energy was regularised (above energy_high or
        # not finite): a counter, so it is in the checkpoint
        self.register_buffer("num_energy_clamped", torch.zeros((), dtype=torch.long))
        # MD's labeling (reference_labeling of the training frames, set in setup): J_iw's target; not model state
        self._labeling: torch.Tensor | None = None
        self.val_energy = EnergyStatistics()
        self.val_ess = EffectiveSampleSize()
        self.val_ramachandran = RamachandranKL()

    # ---------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        init = self.hparams.get("init_checkpoint")
        if init and stage == "fit" and not bool(self.transform.fitted):
            if Path(init).is_file():
                self._load_init_checkpoint(init)
            else:  # fine when resuming (Lightning restores the weights after setup); else refused in on_fit_start
                self._missing_init_checkpoint = init
        if getattr(dm, "topology", None) is not None:
            check_topology(dm.topology, f"the datamodule's topology {dm.topology}")
        if not bool(self.transform.fitted):
            train = getattr(dm, "train", None)
            if train is None:
                raise ValueError(
                    "BoltzmannGenerator needs training positions to fit its coordinate transform: pass an "
                    "MDTrajectoryDataModule (or load a checkpoint of a fitted model)"
                )
            self.transform.fit_(train.reshape(len(train), N_ATOMS, 3))
        if self.hparams.get("iw_forward_weight", 0.0) > 0 and stage == "fit":
            train = getattr(dm, "train", None)
            if train is None:
                raise ValueError("iw_forward_weight > 0 needs the training frames (MD's labeling): pass the datamodule")
            self._labeling = reference_labeling(train.reshape(len(train), N_ATOMS, 3))
        if self.energy is None and (
            stage in ("fit", "validate", "test") or self.hparams.energy_phase_start is not None
        ):
            self.energy = self.make_energy()
        if self.hparams.compile and stage == "fit" and self._log_density_fn == self.log_density:
            self._log_density_fn = torch.compile(self.log_density)
        torch_energy = self.energy is not None and self.hparams.get("energy") == "torch"
        if self.hparams.compile and stage == "fit" and torch_energy:
            # its bound forward, not the module: a compiled module assigned here would join state_dict
            self._energy_fn = torch.compile(self.energy.forward)
        train = getattr(dm, "train", None)
        if self.energy is not None and bool(torch.isnan(self.data_energy_max)) and train is not None:
            u = self.energies(train.reshape(-1, N_ATOMS, 3).double())
            finite = u[torch.isfinite(u)]
            if len(finite) == 0:
                raise ValueError(
                    "no training frame has a finite OpenMM energy: check the trajectory and topology"
                )
            self.data_energy_max.fill_(float(finite.max()))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._missing_init_checkpoint = None  # resumed: the weights are the checkpoint's

    def on_fit_start(self) -> None:
        missing = getattr(self, "_missing_init_checkpoint", None)
        if missing is not None:
            from p4lightning._validation import InputFileError

            raise InputFileError(f"init_checkpoint {missing} does not exist (train the stage it comes from first)")

    def _load_init_checkpoint(self, path: str) -> None:
        """Model weights (transform, flow) from the checkpoint at ``path``, before training starts."""
        from p4lightning._io import load_checkpoint

        state = load_checkpoint(path)["state_dict"]
        state = {k: v for k, v in state.items() if k.startswith(("transform.", "flow.", "prior."))}
        mine = {k for k in self.state_dict() if k.startswith(("transform.", "flow.", "prior."))}
        if set(state) != mine:
            diff = sorted(set(state) ^ mine)[:3]
            raise ValueError(
                f"init_checkpoint {path} is of another architecture (flow, mixing, couplings, Z-matrix): its "
                f"weights do not match this model's, e.g. {diff}"
            )
        self.load_state_dict(state, strict=False)

    def make_energy(self) -> ReducedEnergy:
        """The reduced-energy op chosen by ``energy`` (:func:`~p4lightning.systems.protocol.make_energy`: a
        TorchEnergy on this module's device, or OpenMM workers)."""
        hp = self.hparams
        ala2 = alanine_dipeptide(hp.temperature)
        return make_energy(
            hp.get("energy", "openmm"), ala2.system, hp.temperature, device=self.device,
            n_workers=hp.energy_workers, platform=hp.energy_platform,
        )  # fmt: skip

    def energies(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Reduced energies ``(B,)`` (k_BT) of positions ``(B, 22, 3)`` or ``(B, 66)`` nm in chunks, no graph, on
        ``x``'s device (:func:`~p4lightning.systems.protocol.energies`)."""
        if self.energy is None:
            raise RuntimeError("the energy op is built in setup(); call setup() or attach a trainer first")
        return energies(self.energy, x, chunk)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "energy":  # a plain attribute: not a submodule, so not in state_dict (nn.Module would register it)
            self.__dict__["energy"] = value
            return
        super().__setattr__(name, value)

    def _apply(self, fn: Any, recurse: bool = True) -> BoltzmannGenerator:
        # .to()/.cuda()/.cpu() of the model (Lightning's device moves): the energy op, outside the module tree,
        # follows the model's device; its dtype stays its own (TorchEnergy's parameters are float64)
        super()._apply(fn, recurse)
        op = self.__dict__.get("energy")
        if isinstance(op, torch.nn.Module):
            op.to(self.data_energy_max.device)
        return self

    def generator(self, purpose: int) -> torch.Generator:
        """A CPU generator seeded by ``(seed, rank, global step, purpose)``: reproducible and resumable draws."""
        import numpy as np

        rank = self.global_rank if self._trainer is not None else 0
        key = np.random.SeedSequence([self.hparams.get("seed", 0), rank, self.global_step, purpose])
        return torch.Generator().manual_seed(int(key.generate_state(1, np.uint64)[0] >> 1))

    def teardown(self, stage: str) -> None:
        if self.energy is not None:
            self.energy.close()
        self.energy = None
        self._energy_fn = None

    # ---------------------------------------------------------------------------------------------
    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\ln q(\mathbf{x})` of positions ``(B, 66)`` nm under the model (60-d conformation space)."""
        y, ladj_t = self.transform(x)
        return self.distribution.log_prob(y) + ladj_t

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``n`` positions ``(n, 66)`` nm and their :math:`\ln q(\mathbf{x})` ``(n,)``, differentiable with respect
        to the parameters (the energy phase's reverse KL)."""
        x, log_q, _ = self.sample_with_coordinates(n, generator)
        return x, log_q

    def sample_with_coordinates(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""``(x, log_q, y)``: positions ``(n, 66)`` nm, :math:`\ln q(\mathbf{x})` ``(n,)`` and the flow coordinates
        ``(n, 60)`` they were placed from (for :meth:`MixedCoordinateTransform.out_of_branch`); differentiable."""
        y, log_q_y = self.distribution.rsample(n, generator)
        x, ladj_t = self.transform.inverse(y)
        return x, log_q_y - ladj_t, y

    def weights(self) -> tuple[float, float]:
        """``(w_l, w_e)`` at the current optimizer step (they sum to 1)."""
        start = self.hparams.energy_phase_start
        if start is None or self.global_step < start:
            return 1.0, 0.0
        r = self.hparams.energy_weight_ratio
        return 1.0 / (1.0 + r), r / (1.0 + r)

    def learning_rate(self, step: int) -> float:
        r"""The learning rate at optimizer step ``step``: ``lr`` before ``energy_phase_start``, ``energy_lr`` from
        it on; with ``lr_schedule="cosine"`` each phase's rate times :math:`\tfrac12(1 + \cos\pi t)`, :math:`t` the
        fraction of the phase done (the energy phase ends at the trainer's ``max_steps``)."""
        hp = self.hparams
        start = hp.energy_phase_start
        max_steps = self.trainer.max_steps if self._trainer is not None else -1
        in_energy = start is not None and step >= start
        lr = hp.energy_lr if in_energy else hp.lr
        if hp.get("lr_schedule", "constant") != "cosine":
            return lr
        begin, end = (start, max_steps) if in_energy else (0, start if start is not None else max_steps)
        if end is None or end <= begin:
            raise ValueError(
                "lr_schedule='cosine' needs the phase's end: set trainer max_steps (and energy_phase_start below it)"
            )
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - begin) / (end - begin))))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        start = self.hparams.energy_phase_start
        if (start is not None and self.global_step >= start) or self.hparams.get("lr_schedule") == "cosine":
            lr = self.learning_rate(self.global_step)  # a function of the step: resumes exactly
            for opt in self.trainer.optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        check_features(x, 3 * N_ATOMS, "batch positions")
        w_l, w_e = self.weights()
        nll = -self._log_density_fn(x).mean()
        loss = w_l * nll
        self.log("train/nll", nll, prog_bar=True)
        if w_e > 0:
            if self.energy is None:
                raise RuntimeError("the energy phase needs the energy op; it is built in setup()")
            xg, log_q = self.sample(self.hparams.energy_batch_size, self.generator(_TRAIN_SAMPLES))
            u = (self._energy_fn or self.energy)(xg.reshape(-1, N_ATOMS, 3)).to(xg.dtype)
            u_reg, clamped = regularize_energy(u, self.hparams.energy_high, self.hparams.energy_max)
            keep = keep_lowest(u_reg.detach(), self.hparams.get("energy_drop_fraction", 0.0))
            # J_e = E[u - R_zx] = E[u + ln q] up to the prior's constant, over the kept samples; a dropped sample
            # has weight 0 in both terms (and so zero gradient, Note [zero weight, zero gradient])
            kl = torch.where(keep, u_reg + log_q, 0.0).sum() / keep.sum()
            loss = loss + w_e * kl
            self.log("train/kl", kl, prog_bar=True)
            lam = self.hparams.get("iw_forward_weight", 0.0)
            if lam > 0:
                iw = self.iw_forward_kl(xg.detach(), u_reg.detach(), log_q.detach(), keep)
                loss = loss + w_e * lam * iw
                self.log("train/iw_forward_kl", iw)
            self.num_energy_clamped += int(clamped.sum())
            self.log("train/energy_clamped_fraction", clamped.float().mean())
            self.log("train/energy_clamped_total", self.num_energy_clamped.float())
        if self.hparams.p4_penalty_weight > 0:  # the paper's BG uses none: skip the O(n²) terms entirely
            penalty = sum((m.penalty() for m in self._p4_modules), start=x.new_zeros(()))
            self.log("train/p4_penalty", penalty)
            loss = loss + penalty
        self.log("train/w_e", w_e)
        return loss

    def iw_forward_kl(
        self, x: torch.Tensor, u: torch.Tensor, log_q: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`J_\text{iw} = -\sum_i \bar w_i \ln q_\theta(\mathbf{x}_i)` of generated positions ``x``
        ``(B, 66)`` nm (no graph) with reduced energies ``u`` and :math:`\ln q` at drawing ``log_q`` ``(B,)``:
        :math:`\bar w` = softmax of :math:`-u - \ln q` over ``keep`` ``(B,)`` and MD's labeling, the top
        ``iw_clip_fraction`` clipped. The gradient flows through :math:`\ln q_\theta(\mathbf{x}_i)` only."""
        if self._labeling is None:
            raise RuntimeError("iw_forward_kl needs MD's labeling; it is set in setup('fit')")
        log_w = -u - log_q
        valid = keep & torch.isfinite(log_w) & has_labeling(x, self._labeling)
        if not bool(valid.any()):
            return x.new_zeros(())
        log_w = torch.where(valid, log_w, -torch.inf)
        k = int(int(valid.sum()) * self.hparams.get("iw_clip_fraction", 0.0))
        if k > 0:
            log_w = log_w.clamp(max=torch.topk(log_w, k + 1).values[-1])
        w = torch.softmax(log_w, 0)
        log_q_theta = self._log_density_fn(x)
        return -torch.where(valid, w * log_q_theta, 0.0).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._held_out_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._held_out_step(batch, "test")

    def _held_out_step(self, batch: Any, prefix: str) -> None:
        (x,) = batch
        nll = -self.log_density(x).mean()
        self.log(f"{prefix}/nll", nll, prog_bar=True, sync_dist=True, batch_size=len(x))
        self.val_ramachandran.update(*phi_psi(x), reference=True)

    @torch.no_grad()
    def evaluate_samples(
        self, n: int, chunk: int = 1024, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Draw ``n`` samples (:func:`~p4lightning.metrics.draw.draw`, ``chunk`` at a time); return positions
        ``(n, 66)`` nm, reduced energies ``u`` ``(n,)`` (float64), ``log_q`` and log importance weights
        ``log_w = -u - log_q`` (needs the energy op, i.e. after setup)."""
        if self.energy is None:
            raise RuntimeError("evaluate_samples needs the energy op; call setup() or attach a trainer first")
        d = draw(self, n, generator, chunk, energy_chunk=chunk)
        return {"x": d.x, "u": d.u, "log_q": d.log_q, "log_w": -d.u - d.log_q}

    def on_validation_epoch_end(self) -> None:
        self._sample_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._sample_metrics("test")

    def _sample_metrics(self, prefix: str) -> None:
        """Energy statistics, reverse ESS, Ramachandran KL and the φ ≥ 0 fraction (plain and reweighted) of
        ``n_eval_samples`` samples against the held-out frames seen in this epoch (logged as ``{prefix}/...``)."""
        if self.energy is None:
            return
        out = self.evaluate_samples(self.hparams.n_eval_samples, generator=self.generator(_VAL_SAMPLES))
        self.val_energy.threshold = float(self.data_energy_max)
        self.val_energy.update(out["u"])
        self.val_ess.update(out["log_w"])
        phi, psi = phi_psi(out["x"])
        self.val_ramachandran.update(phi, psi, reference=False)
        stats = self.val_energy.compute()
        self.log_dict(
            {
                f"{prefix}/energy_mean": float(stats["mean"]),
                f"{prefix}/energy_median": float(stats["median"]),
                f"{prefix}/low_energy_fraction": float(stats["low_energy_fraction"]),
                f"{prefix}/ess": self.val_ess.compute().float(),
                f"{prefix}/ramachandran_kl": self.val_ramachandran.compute().float(),
            }
        )
        for metric in (self.val_energy, self.val_ess, self.val_ramachandran):
            metric.reset()
        # the minor basin, watched through training (reverse KL is mode-seeking): its share among the samples and
        # its importance-reweighted share (this rank's samples; averaged over ranks)
        phi_pos = (phi >= 0).double()
        w = torch.softmax(torch.nan_to_num(out["log_w"], nan=-torch.inf), 0)
        self.log_dict(
            {f"{prefix}/phi_positive_fraction": float(phi_pos.mean()),
             f"{prefix}/phi_positive_reweighted": float((w * phi_pos).sum())},
            sync_dist=True,
        )  # fmt: skip

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (the paper's), fused: one kernel over all parameter tensors instead of ~10 small operations per
        tensor, measurably faster on the paper-size step (``benchmarks/bg/bg_step.py``,
        docs/benchmarks/bg_step.md). Same update rule; AdamW when ``weight_decay`` > 0."""
        wd = self.hparams.get("weight_decay", 0.0)
        if wd > 0:  # decoupled weight decay; with 0 this is Adam's update exactly
            return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=wd, fused=True)
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=True)

    def extra_repr(self) -> str:
        hp = self.hparams
        if hp.get("flow", "realnvp") == "spline":
            return f"flow=spline, mixing={hp.mixing}, n_couplings={hp.n_couplings}, circular={self.transform.n_circular}"
        return f"mixing={hp.mixing}, n_blocks={hp.n_blocks}"


def keep_lowest(u: torch.Tensor, drop_fraction: float) -> torch.Tensor:
    r"""``(B,)`` bool: all but the :math:`\lfloor B \cdot` ``drop_fraction`` :math:`\rfloor` highest of the energies
    ``u`` ``(B,)`` (ties broken by position; non-finite energies count as highest)."""
    k = int(len(u) * drop_fraction)
    keep = torch.ones_like(u, dtype=torch.bool)
    if k == 0:
        return keep
    high = torch.where(torch.isfinite(u), u, torch.inf)
    keep[torch.topk(high, k).indices] = False
    return keep
