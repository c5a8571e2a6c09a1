"""The validation gate: one check per kind of value, and one constant per choice (the Literal alias) feeding both
the annotation LightningCLI reads and the runtime check."""

import inspect
import typing

import pytest

from p4lightning._validation import check_literal, check_nonnegative_int, check_positive


def test_positive_and_nonnegative_checks_name_the_value():
    assert check_positive(1e-3, "lr") == 1e-3
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="lr must be > 0"):
            check_positive(bad, "lr")
    with pytest.raises(TypeError, match="lr must be a number"):
        check_positive("1e-3", "lr")
    assert check_nonnegative_int(0, "seed") == 0
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        check_nonnegative_int(-1, "seed")


def test_every_literal_annotated_choice_is_checked_against_the_same_literal():
    """For each constructor argument annotated with a Literal alias, a value outside it is refused naming the
    argument, and every value inside it is accepted by the check (the annotation and the check are one constant)."""
    from p4lightning.data.md_datamodule import SplitKind
    from p4lightning.flows.blocks import SPLINE_MIXINGS, SplineMixing
    from p4lightning.models.boltzmann import BoltzmannGenerator, ZMatrixName
    from p4lightning.p4.schedule import OPTIMIZER_STATE_POLICIES, OptimizerStatePolicy
    from p4lightning.systems.alanine import Z_MATRICES
    from p4lightning.systems.protocol import ENERGY_KINDS, EnergyKind

    assert set(typing.get_args(ZMatrixName)) == set(Z_MATRICES)
    assert SPLINE_MIXINGS == typing.get_args(SplineMixing)
    assert OPTIMIZER_STATE_POLICIES == typing.get_args(OptimizerStatePolicy)
    assert ENERGY_KINDS == typing.get_args(EnergyKind)
    for literal in (SplitKind, SplineMixing, ZMatrixName, EnergyKind):
        for value in typing.get_args(literal):
            assert check_literal(value, literal, "x") == value
        with pytest.raises(ValueError, match="x must be one of"):
            check_literal("nonsense", literal, "x")
    hints = typing.get_type_hints(BoltzmannGenerator.__init__)
    for name in ("flow", "z_matrix", "lr_schedule", "energy"):
        assert typing.get_origin(hints[name]) is typing.Literal, name
        with pytest.raises(ValueError, match=name):
            BoltzmannGenerator(**{name: "nonsense"})
    assert "lr" in inspect.signature(BoltzmannGenerator).parameters
    with pytest.raises(ValueError, match="energy_lr must be > 0"):
        BoltzmannGenerator(energy_lr=0.0)
