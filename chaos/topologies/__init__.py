"""The soak's topologies, one module each: every module registers its own
with chaos.topology.register() when imported (see chaos.topology)."""
