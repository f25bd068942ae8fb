"""The run folder (DESIGN.md): config.json, metrics.jsonl, ckpts/, previews/, final/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sds_core.errors import ConfigError, SdsError
from sds_core.files import LOCK_NAME, RunLock, atomic_write, is_temp_file, remove_stale_temps


def check_record(data: Any, source: Path) -> dict[str, Any]:
    """A run record (config.json, or what a checkpoint holds to rebuild it) with the keys the loop reads."""
    if not (
        isinstance(data, dict)
        and isinstance(data.get("prompt"), str)
        and isinstance(data.get("config"), dict)
        and isinstance(data["config"].get("run"), dict)
        and isinstance(data.get("preset", ""), str)
    ):
        raise SdsError(f"{source} holds no sds run record (a prompt and a config with a run section)")
    return data


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
        atomic_write(self.config_path, text.encode("utf-8"))

    def read_config(self) -> dict[str, Any]:
        """config.json, checked for the keys the loop reads (a user error when it lacks them)."""
        try:
            data = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SdsError(f"{self.config_path} cannot be read as JSON ({exc})") from None
        return check_record(data, self.config_path)

    def foreign_entries(self) -> list[str]:
        """What the folder holds besides the run lock and temporary files a killed writer left."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.name != LOCK_NAME and not is_temp_file(p))

    def check_new(self) -> None:
        """Refuse a folder a new run must not write into: a file, a run, or anything not a run."""
        out = self.root
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a folder; pick a new or empty folder")
        if self.config_path.exists():
            raise ConfigError(f"{out} already holds a run; continue it with `sds resume {out}` or pick another --out")
        if self.last_checkpoint.exists():
            raise ConfigError(
                f"{out} holds a run checkpoint but no config.json; restore and continue it with "
                f"`sds resume {out}` or pick another --out"
            )
        entries = self.foreign_entries()
        if entries:
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise ConfigError(f"--out {out} is not empty and holds no sds run ({shown}); pick a new or empty folder")

    def lock(self) -> RunLock:
        """Take the folder's run lock (creating the folder), then delete stale temporary files."""
        lock = RunLock(self.root).acquire()
        remove_stale_temps(self.root)
        return lock

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
        atomic_write(self.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode("utf-8"))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line]
