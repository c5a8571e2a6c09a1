"""The labeling of a conformation: methyl hydrogens' order and the chirality at CA."""


from p4lightning.systems.observables import labeling_signs, same_labeling


def test_md_frames_share_one_labeling_and_swaps_or_mirror_images_leave_it(md_positions):
    signs = labeling_signs(md_positions)
    assert bool((signs == signs[0]).all())  # MD never swaps hydrogens nor inverts CA
    assert bool(same_labeling(md_positions, md_positions).all())
    swapped = md_positions[:4].clone()
    swapped[:, [12, 13]] = swapped[:, [13, 12]]  # ALA HB2 <-> HB3: same energy, the mirror labeling
    assert not bool(same_labeling(swapped, md_positions).any())
    rotated = md_positions[:4].clone()
    rotated[:, [11, 12, 13]] = rotated[:, [12, 13, 11]]  # a cyclic relabelling = a 120° rotation: same labeling
    assert bool(same_labeling(rotated, md_positions).all())
    mirror = -md_positions[:4]  # D-alanine (and every methyl mirrored)
    assert not bool(same_labeling(mirror, md_positions).any())
    assert bool((labeling_signs(mirror) != signs[:4]).all())
