"""Hand-written building blocks for the built-in prompt sets, one module per domain.

Each module exposes ``DISTILL`` and ``HELDOUT``: lists of template functions ``f(rng) -> str``.
The two lists share no template and draw from disjoint topic pools, so benchmarks on
``heldout`` never see a prompt the draft was distilled on.
"""
