"""_sansio: one floor of the package (docs/architecture.md, "The layers, and dependencies
that point one way")."""
