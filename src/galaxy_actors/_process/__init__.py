"""_process: see docs/architecture.md, "The layers"."""
