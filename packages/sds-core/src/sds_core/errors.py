"""Errors that reach the user as one clear sentence (exit status 2 in the CLI)."""

from __future__ import annotations


class SdsError(Exception):
    """Bad input or an unmet requirement, told in one sentence; the CLI prints it without a traceback."""


class ConfigError(SdsError):
    """A configuration value or key that is not accepted."""


class RunFolderBusy(SdsError):
    """A run folder locked by another process."""


class PluginError(SdsError):
    """A plugin that is unknown, duplicated or broken."""


class RunInterrupted(Exception):
    """Raised by the loop after it saved a checkpoint on SIGINT or SIGTERM."""

    def __init__(self, step: int, checkpoint: str, detail: str | None = None) -> None:
        super().__init__(detail or f"interrupted at step {step}; checkpoint written to {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint
