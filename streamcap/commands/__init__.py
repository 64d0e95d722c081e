"""CLI command implementations; each module has ``run(args) -> int``."""
