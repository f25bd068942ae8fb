"""A frozen copy of sds_core/losses (base, sds, csd, nfsd, ism, sjc, vsd, guidance_combination) as
it was at commit 2d68d16, before the noise-schedule abstraction: the reference that
tests/losses/test_bit_exact.py holds today's losses to, bit for bit, on the DDPM backends. The
configs are today's (sds_core.losses.sds_config / family_config: options only). Never edit it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def frozen_losses() -> Any:
    """The frozen loss classes with today's configs, as the namespace `gradient_cases.build_loss` reads."""
    from sds_core.losses.family_config import CSDConfig, ISMConfig, NFSDConfig, SJCConfig, VSDConfig
    from sds_core.losses.sds_config import SDSConfig
    from tests.losses.frozen.csd import CSDLoss
    from tests.losses.frozen.ism import ISMLoss
    from tests.losses.frozen.nfsd import NFSDLoss
    from tests.losses.frozen.sds import SDSLoss
    from tests.losses.frozen.sjc import SJCLoss
    from tests.losses.frozen.vsd import VSDLoss

    return SimpleNamespace(
        SDSLoss=SDSLoss,
        CSDLoss=CSDLoss,
        NFSDLoss=NFSDLoss,
        ISMLoss=ISMLoss,
        SJCLoss=SJCLoss,
        VSDLoss=VSDLoss,
        SDSConfig=SDSConfig,
        CSDConfig=CSDConfig,
        NFSDConfig=NFSDConfig,
        ISMConfig=ISMConfig,
        SJCConfig=SJCConfig,
        VSDConfig=VSDConfig,
    )
