"""_actors: see docs/architecture.md, "The layers"."""
