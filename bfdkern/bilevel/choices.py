"""The hypergradient modes by name (plain data: the command line offers them without importing torch)."""

MODES = ("fd", "jvp", "unroll")
"""``fd`` (finite difference, the paper's Eq. 18), ``jvp`` (exact, forward mode), ``unroll`` (exact,
double backward through the virtual step, Eq. 17); see :mod:`bfdkern.bilevel.hypergradient`."""
