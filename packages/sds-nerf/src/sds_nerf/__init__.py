"""sds-nerf: the DreamFusion NeRF generator (`nerf`) for the sds toolkit.

Importing this package is cheap: torch and nerfacc are imported by the modules that need them.
"""

__version__ = "0.1.0"
