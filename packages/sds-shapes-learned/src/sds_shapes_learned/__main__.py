"""`python -m sds_shapes_learned [--out DIR] [--steps N] [--FIELD VALUE ...]`: train or resume shapes-learned.

`--ship FOLDER` writes the EMA weights saved in DIR, with their model card, to FOLDER instead
(the package's `sds_shapes_learned/models/shapes-learned` to ship them); `--figures FILE` adds a Markdown
file of figures measured on those weights to the card.

Every field of `TrainConfig` is a flag (tuples as comma-separated values); `--format sd` trains the
Stable Diffusion format model, with `SD_DEFAULTS` for the options not given (`--format sd3`: the
Stable Diffusion 3 one, with `SD3_DEFAULTS`; `--format zero123`: the Zero-1-to-3 one, with
`ZERO123_DEFAULTS`). Bad options: one sentence on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from sds_core.api import SdsError
from sds_shapes_learned.config import FORMATS, SD3_DEFAULTS, SD_DEFAULTS, ZERO123_DEFAULTS, TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sds_shapes_learned", description=TrainConfig.__doc__)
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name == "extra":
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None, help=str(hints[f.name]))
    parser.add_argument("--ship", default=None, help="export the saved EMA weights to this folder, no training")
    parser.add_argument("--figures", default=None, help="with --ship: a Markdown file of figures for the model card")
    return parser


def _parse(value: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_parse(v.strip(), item) for v in value.split(",") if v.strip())
    if hint is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(value)
        return value.lower() in ("true", "1")
    return hint(value)


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, str | None, str | None]:
    """The training options, the --ship folder and the --figures file."""
    args = vars(_parser().parse_args(argv))
    ship, figures = args.pop("ship"), args.pop("figures")
    if figures and not ship:
        raise SdsError("--figures goes with --ship (it adds measured figures to the shipped model card)")
    hints = typing.get_type_hints(TrainConfig)
    values = {}
    for name, raw in args.items():
        if raw is None:
            continue
        try:
            values[name] = _parse(raw, hints[name])
        except ValueError:
            raise SdsError(f"--{name.replace('_', '-')} takes {hints[name]}, not {raw!r}") from None
    if values.get("format", "if") not in FORMATS:
        raise SdsError(f"--format takes one of {', '.join(FORMATS)}, not {values['format']!r}")
    if values.get("format") == "sd":
        values = {**SD_DEFAULTS, **values}
    elif values.get("format") == "sd3":
        values = {**SD3_DEFAULTS, **values}
    elif values.get("format") == "zero123":
        values = {**ZERO123_DEFAULTS, **values}
    return TrainConfig(**values), ship, figures


def main(argv: list[str] | None = None) -> int:
    try:
        from sds_shapes_learned.train import ship, train

        cfg, folder, figures = config_from_args(argv)
        if folder:
            ship(cfg, Path(folder), Path(figures) if figures else None)
        else:
            train(cfg)
    except SdsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
