"""The config tree a command line gives (`--config`, `--set`, `--steps`, `--seed`), shared by the
commands that build a run's config. Imports no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def command_overrides(
    config: Path | None, sets: list[str] | None, steps: int | None, seed: int | None
) -> dict[str, Any]:
    """The config tree given on the command line: --config, then --set, then --steps / --seed."""
    from sds_core.config import deep_merge, load_config_file, parse_sets

    overrides = load_config_file(config) if config else {}
    overrides = deep_merge(overrides, parse_sets(sets or []))
    run_overrides = {k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None}
    return deep_merge(overrides, {"run": run_overrides}) if run_overrides else overrides
