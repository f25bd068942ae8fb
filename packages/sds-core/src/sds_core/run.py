"""The run folder (DESIGN.md): config.json, metrics.jsonl, ckpts/, previews/, final/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sds_core.imaging import atomic_write_bytes


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def ckpt_dir(self) -> Path:
        return self.root / "ckpts"

    @property
    def last_checkpoint(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def previews(self) -> Path:
        return self.root / "previews"

    @property
    def final(self) -> Path:
        return self.root / "final"

    def step_checkpoint(self, step: int) -> Path:
        return self.ckpt_dir / f"step-{step:06d}.pt"

    def write_config(self, record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=2, sort_keys=False, default=str) + "\n"
        atomic_write_bytes(self.config_path, text.encode("utf-8"))

    def read_config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.config_path.read_text(encoding="utf-8"))
        return data

    def truncate_metrics(self, done_steps: int) -> None:
        """Drop metric lines of steps after `done_steps` (they are redone after a resume)."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= done_steps:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by a crash
        atomic_write_bytes(self.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode("utf-8"))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line]
