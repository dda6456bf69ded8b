"""Workflows built on top of the library, as torchtune keeps its recipes apart from its library: the
embedded demo (:mod:`bfdkern.recipes.demo`) and the named ablations and baselines of BLADES (:mod:`bfdkern.recipes.presets`)
run side by side (:mod:`bfdkern.recipes.ablations`). Nothing in the library imports them; the commands do."""
