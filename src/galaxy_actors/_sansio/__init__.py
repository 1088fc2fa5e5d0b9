"""_sansio: see docs/architecture.md, "The layers"."""
