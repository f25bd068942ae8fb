"""torch.compile for the hot parts of a step (the guidance's UNet and VAE encoder, a field's MLP).

Every component that compiles something takes the same option, `compile`: "auto" compiles on
CUDA, where a step is dominated by launch overhead and small unfused kernels, and leaves the CPU
eager (inductor's C++ build of a UNet takes minutes there, and eager is what CPU runs resume bit
for bit with); "on" and "off" force it. torch is imported only when something is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable[..., Any])


def compile_enabled(setting: str, device: torch.device) -> bool:
    """Whether `setting` ("auto", "on", "off") compiles on `device`: auto means CUDA only."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def compiled(fn: F, enabled: bool, *, dynamic: bool, mode: str = "default", backend: str = "inductor") -> F:
    """`torch.compile(fn)` when `enabled`, else `fn` itself. `dynamic=False` specialises on the first
    shapes (a UNet at a run's fixed batch and side); `dynamic=True` serves varying sizes (a field's
    sample count changes every step) with one graph. Graph breaks are allowed (an extension's
    kernel, e.g. tinycudann's, runs as it is between compiled parts)."""
    if not enabled:
        return fn
    import torch

    options: dict[str, Any] = {"dynamic": dynamic, "backend": backend}
    if backend == "inductor":  # a mode is inductor's
        options["mode"] = mode
    return torch.compile(fn, **options)  # type: ignore[return-value]
