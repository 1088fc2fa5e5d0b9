"""_transports: see docs/architecture.md, "The layers"."""
