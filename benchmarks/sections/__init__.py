"""bin/bench's sections, one module each; every module registers its own
section with benchmarks.registry.register() when imported."""
