"""`python -m sds_shapes.learned`, deprecated: runs `python -m sds_shapes_learned` with the same
arguments (package sds-shapes-learned), after one line on stderr saying so."""

from __future__ import annotations

import importlib.util
import runpy
import sys

NEW = "sds_shapes_learned"


def main() -> int:
    """Run the new trainer module as `__main__`, or say in one sentence that it is not installed (2)."""
    print("python -m sds_shapes.learned is deprecated; use python -m sds_shapes_learned", file=sys.stderr)
    if importlib.util.find_spec(NEW) is None:
        print(
            "error: the trainer moved to the package sds-shapes-learned, which is not installed "
            "(pip install ./packages/sds-shapes-learned[train]).",
            file=sys.stderr,
        )
        return 2
    runpy.run_module(NEW, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
