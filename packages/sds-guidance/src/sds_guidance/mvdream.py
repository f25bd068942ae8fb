"""MVDream (Shi, Wang, Ye, Long, Li, Yang, "MVDream: Multi-view Diffusion for 3D Generation",
ICLR 2024) as a multi-view SDS prior, built on diffusers' `UNet2DConditionModel`.

The model is Stable Diffusion 2.1-base's UNet (epsilon prediction; MVDream's sd-v2.1-base-4view
works at 256 px, 32 x 32 latents) with two changes, both expressed with diffusers' own hooks:

- the camera: the flattened 4 x 4 camera-to-world matrix (16 values) goes through an MLP
  (Linear 16 -> 1280, SiLU, Linear 1280 -> 1280; the port's `camera_embed`) that is added to the
  timestep embedding. This is exactly diffusers' `class_embed_type="projection"` with
  `projection_class_embeddings_input_dim=16`: its `class_embedding` is a `TimestepEmbedding`
  (linear_1 16 -> 1280, SiLU, linear_2 1280 -> 1280), added to the time embedding
  (`class_embeddings_concat` false), and the camera goes in as `class_labels`;
- the views: every self-attention layer (`attn1` of each transformer block, down, mid and up)
  attends jointly over the V views of one object, (B V, HW, C) -> (B, V HW, C) -> back
  (`MultiViewAttnProcessor`, set with `unet.set_attn_processor`); cross-attention to the text
  (`attn2`) stays per view. The batch holds V consecutive views per object, in the camera
  sampler's order (`cameras.views_per_object`).

The weights load from the published diffusers-format port's layout (ashawkey/mvdream-sd2.1-diffusers,
as threestudio-mvdream and the `MVDreamPipeline` of ashawkey/mvdream_diffusers read it):
`unet/` is a `MultiViewUNetModel` whose config keys and weight names are the original LDM
`openaimodel` ones (`model_channels`, `channel_mult`, `attention_resolutions`, `num_head_channels`,
`context_dim`, `camera_dim`, ...; `input_blocks.*`, `middle_block.*`, `output_blocks.*`,
`time_embed.*`, `camera_embed.*`, `out.*`). `unet_config` translates the config and `diffusers_state`
the weights: `camera_embed.{0,2}` -> the LDM names of a projection class embedding
(`label_emb.0.{0,2}`), then diffusers' own `convert_ldm_unet_checkpoint` (the LDM -> diffusers
map of single-file loading). An original `sd-v2.1-base-4view` state dict (names prefixed
`model.diffusion_model.`) maps the same way. The other components (vae, text_encoder, tokenizer,
scheduler) are SD 2.1-base's in diffusers layout.

The camera condition (threestudio-mvdream's default `camera_condition_type: rotation`, its
`normalize_camera`): the view's camera-to-world matrix in sds's world (z up, OpenGL camera axes
looking along -z, `sds_core.protocols`: threestudio's convention too) with its translation scaled
to unit length, flattened row by row. Checked in session 36 against threestudio-mvdream's
`get_camera_cond` (it feeds its z-up world's c2w as it is, the Blender conversion commented out)
and MVDream's `camera_utils.py` (`get_camera` builds y-up matrices and turns them to Blender's z-up
world with a y/z flip). MVDream's azimuth a lies at sds azimuth a - 90 degrees, both counter-clockwise
seen from above: sds's front (azimuth 0, +x) is MVDream's azimuth 90, where its `t2i.py` starts by
default (`--camera_azim 90`); its author notes that view is a learned tendency, not a guaranteed
front (bytedance/MVDream issue 19).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sds_core.api import BuildContext, CameraBatch, ConfigError, NoisePrediction, Render, SdsError
from sds_guidance._diffusers import (
    conditioning_batch,
    epsilon_from_output,
    freeze,
    load_part,
    module_device,
    quiet_loading,
    setup_attention,
    split_predictions,
)
from sds_guidance.config import MVDreamConfig
from sds_guidance.prompt_embeddings import TextConditioning
from sds_guidance.stable_diffusion import StableDiffusionGuidance

CAMERA_DIM = 16  # the flattened 4 x 4 camera-to-world matrix
#: the LDM name prefix of an original (non-diffusers) checkpoint's UNet weights
LDM_PREFIX = "model.diffusion_model."
#: the port's camera MLP -> the LDM names diffusers' converter reads for a projection class embedding
CAMERA_KEYS = {"camera_embed.0.": "label_emb.0.0.", "camera_embed.2.": "label_emb.0.2."}
_UNSUPPORTED = {  # port config keys whose non-default values are another architecture
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "num_classes": None,
    "adm_in_channels": None,
    "ip_dim": 0,  # ImageDream's image prompt
    "dims": 2,
}


@dataclass
class MultiViewConditioning(TextConditioning):
    """The text conditioning of a batch and each view's camera condition (B, 16)."""

    camera: Tensor | None = None


class MultiViewAttnProcessor:
    """Self-attention over the `num_views` views of one object: (B V, N, C) is attended as
    (B, V N, C) by the layer's own processor (diffusers' SDPA `AttnProcessor2_0`, or the sliced
    one), then split back; cross-attention layers are not given this processor."""

    def __init__(self, base: Any, num_views: int) -> None:
        self.base = base
        self.num_views = num_views

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        views = self.num_views
        if views == 1 or encoder_hidden_states is not None:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)  # type: ignore[no-any-return]
        batch, tokens, channels = hidden_states.shape
        if batch % views:
            raise ConfigError(f"the mvdream guidance got {batch} views, not a multiple of its {views} views")
        joined = hidden_states.reshape(batch // views, views * tokens, channels)
        out = self.base(attn, joined, None, attention_mask, temb, **kwargs)
        return out.reshape(batch, tokens, channels)  # type: ignore[no-any-return]


def join_views(unet: Any, num_views: int) -> None:
    """Give every self-attention layer (`attn1`) of `unet` a `MultiViewAttnProcessor` over
    `num_views` views around its current processor (num_views 1: each view on its own)."""
    processors = {}
    for name, processor in unet.attn_processors.items():
        base = processor.base if isinstance(processor, MultiViewAttnProcessor) else processor
        processors[name] = MultiViewAttnProcessor(base, num_views) if name.endswith("attn1.processor") else base
    unet.set_attn_processor(processors)


def unet_config(port: dict[str, Any]) -> dict[str, Any]:
    """The `UNet2DConditionModel` config of the port's `MultiViewUNetModel` config (its LDM keys)."""
    for key, default in _UNSUPPORTED.items():
        if port.get(key, default) != default:
            raise SdsError(f"the MVDream UNet config sets {key}={port[key]!r}, which sds's MVDream UNet does not build")
    try:
        channels = int(port["model_channels"])
        mult = [int(m) for m in port["channel_mult"]]
        attention = {int(r) for r in port["attention_resolutions"]}
        head_channels = int(port["num_head_channels"])
        depth = port.get("transformer_depth", 1)
        config: dict[str, Any] = {
            "sample_size": int(port["image_size"]),
            "in_channels": int(port["in_channels"]),
            "out_channels": int(port["out_channels"]),
            "layers_per_block": int(port["num_res_blocks"]),
            "cross_attention_dim": int(port["context_dim"]),
            "camera": int(port["camera_dim"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise SdsError(
            f"the MVDream UNet config lacks or misstates {exc}; it is no MultiViewUNetModel config"
        ) from None
    if head_channels <= 0 or any(channels * m % head_channels for m in mult):
        widths = [channels * m for m in mult]
        raise SdsError(f"the MVDream UNet's widths {widths} are not multiples of num_head_channels={head_channels}")
    widths = [channels * m for m in mult]
    # LDM puts attention at the levels whose downsampling factor is in attention_resolutions
    levels = [2**i in attention for i in range(len(mult))]
    camera = config.pop("camera")
    config.update(
        block_out_channels=widths,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)],
        # diffusers' SD 2 configs give attention_head_dim as the head count per level
        attention_head_dim=[w // head_channels for w in widths],
        transformer_layers_per_block=depth if isinstance(depth, int) else list(depth),
        use_linear_projection=bool(port.get("use_linear_in_transformer", False)),
        # LDM's GroupNorm32; a shrunk test model states its own
        norm_num_groups=int(port.get("norm_num_groups", 32)),
        flip_sin_to_cos=True,  # LDM's timestep_embedding: cos first
        freq_shift=0,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=camera,
    )
    return config


def diffusers_state(port_state: dict[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """The port's (or an original checkpoint's) UNet weights under diffusers' names for `config`
    (`unet_config`'s): the camera MLP renamed to LDM's class-embedding names, then diffusers'
    LDM -> diffusers converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    ldm: dict[str, Tensor] = {}
    for key, value in port_state.items():
        name = key[len(LDM_PREFIX) :] if key.startswith(LDM_PREFIX) else key
        for old, new in CAMERA_KEYS.items():
            if name.startswith(old):
                name = new + name[len(old) :]
        ldm[LDM_PREFIX + name] = value
    with quiet_loading():
        try:
            return convert_ldm_unet_checkpoint(ldm, config)  # type: ignore[no-any-return]
        except KeyError as exc:
            raise SdsError(f"the MVDream UNet weights lack {exc}; they are no MultiViewUNetModel state dict") from None


def camera_condition(cameras: CameraBatch) -> Tensor:
    """(B, 16): each camera-to-world matrix with its position scaled to unit length, row by row
    (threestudio-mvdream's `normalize_camera`, see the module doc)."""
    c2w = cameras.c2w.float().clone()
    position = c2w[:, :3, 3]
    c2w[:, :3, 3] = position / (position.norm(dim=-1, keepdim=True) + 1e-8)
    return c2w.reshape(-1, CAMERA_DIM)


def _unet_folder(config: MVDreamConfig) -> Path:
    """The model's `unet/` folder: in the folder given, or the hub repository's (downloaded when the
    hub can be reached; offline, one sentence from `load_part`)."""
    path = Path(config.model).expanduser()
    if path.is_dir():
        return path / "unet"

    def download() -> Path:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(config.model, revision=config.revision, allow_patterns=["unet/*"]))

    return load_part(config, "MVDream", "unet", download) / "unet"


def load_multiview_unet(config: MVDreamConfig, dtype: torch.dtype) -> Any:
    """The port's `unet/` (config.json and its safetensors weights) as a `UNet2DConditionModel`."""
    from diffusers import UNet2DConditionModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = _unet_folder(config)
    path = folder / "config.json"
    try:
        port = json.loads(path.read_text(encoding="utf-8")[:1_000_000])
    except (OSError, ValueError):
        raise SdsError(f"{path} cannot be read as JSON; pass an MVDream folder in diffusers layout") from None
    if not isinstance(port, dict):
        raise SdsError(f"{path} is not a JSON object")
    if port.get("_class_name") != "MultiViewUNetModel":
        raise SdsError(f"{path} describes a {port.get('_class_name')!r}, not MVDream's MultiViewUNetModel")
    unet_cfg = unet_config(port)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = "only pickled weights (.bin), which sds does not unpickle here; convert them to safetensors"
        raise SdsError(f"{folder} holds {pickled if any(folder.glob('*.bin')) else 'no safetensors weights'}")
    try:
        state: dict[str, Tensor] = {}
        for file in files:
            state.update(load_file(str(file)))
    except (OSError, SafetensorError) as exc:
        raise SdsError(f"{folder} holds a damaged weight file ({type(exc).__name__})") from None
    weights = diffusers_state(state, unet_cfg)
    with quiet_loading():
        with torch.device("meta"):  # no random initialisation: every tensor comes from the file
            unet = UNet2DConditionModel.from_config(unet_cfg)
        missing, unexpected = unet.load_state_dict(weights, strict=False, assign=True)
        if missing or unexpected:
            what = f"lack {missing[0]}" if missing else f"have an unknown {unexpected[0]}"
            raise SdsError(f"the weights of {folder} {what} ({len(missing)} missing, {len(unexpected)} unknown)")
        return unet.to(dtype=dtype)


class MVDreamGuidance(StableDiffusionGuidance):
    """A frozen MVDream UNet (SD 2.1-base's, with the camera embedding and joint self-attention
    over the views of an object), SD 2.1's VAE and text encoder."""

    what = "MVDream"

    def __init__(self, config: MVDreamConfig, context: BuildContext) -> None:
        views = config.num_views
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ConfigError(f"guidance.num_views must be a whole number of at least 1, not {views!r}")
        cameras = (context.config or {}).get("cameras", {})
        per_object = cameras.get("views_per_object", 1) if isinstance(cameras, dict) else 1
        if cameras and per_object != views:
            raise ConfigError(
                f"the mvdream guidance denoises {views} views of one object jointly, and cameras.views_per_object "
                f"is {per_object}; set cameras.views_per_object={views}"
            )
        self.num_views = views
        super().__init__(config, context)

    def _scheduler_and_unet(self) -> tuple[Any, Any]:
        from diffusers import DDPMScheduler

        config = self.config
        scheduler = load_part(
            config,
            self.what,
            "scheduler",
            lambda: DDPMScheduler.from_pretrained(config.model, subfolder="scheduler", revision=config.revision),
        )
        unet = load_multiview_unet(config, self.dtype)  # type: ignore[arg-type]
        freeze(unet)
        setup_attention(unet, config.attention_slicing)
        join_views(unet, self.num_views)
        if self.device.type == "cuda" and config.channels_last:
            unet.to(memory_format=torch.channels_last)
        return scheduler, unet

    def _check_batch(self, batch: int) -> None:
        if batch % self.num_views:
            raise ConfigError(
                f"the mvdream guidance denoises {self.num_views} views of one object together, and the batch has "
                f"{batch}; set cameras.batch_size to a multiple of {self.num_views}"
            )

    def condition(self, render: Render, cameras: CameraBatch | None) -> MultiViewConditioning:
        """The text conditioning and each view's camera condition (the views in the sampler's order)."""
        if cameras is None:
            raise ConfigError("the mvdream guidance conditions on each view's camera; use a 3D generator")
        batch = render.image.shape[0]
        self._check_batch(batch)
        text = super().condition(render, cameras)
        return MultiViewConditioning(**vars(text), camera=camera_condition(cameras))

    def negative_condition(self, conditioning: Any, text: str) -> Any:
        """NegativePrompting (NFSD): the free text's conditioning, with the same cameras."""
        negative = self.embeddings.negative_condition(conditioning, text)
        if negative is None or not isinstance(conditioning, MultiViewConditioning):
            return negative
        return MultiViewConditioning(**vars(negative), camera=conditioning.camera)

    def trainable_copy(self, rank: int, camera_dim: int) -> Any:
        """VSD's LoRA copy would replace the camera embedding MVDream needs: refused in one sentence."""
        raise ConfigError("the vsd loss cannot train a LoRA copy of the mvdream guidance; use --loss sds")

    def predict_noise(self, x_t: Tensor, t: Tensor, conditioning: Any) -> NoisePrediction:
        cond: MultiViewConditioning = conditioning
        if not isinstance(cond, MultiViewConditioning) or cond.camera is None:
            raise ConfigError("the mvdream guidance predicts from its own condition(render, cameras)")
        self.embeddings.release()
        batch = x_t.shape[0]
        self._check_batch(batch)
        copies = 2 + (0 if cond.negative is None else cond.negative.shape[0])
        device = module_device(self.unet, self.device)
        x_in = x_t.to(device, torch.float32).repeat(copies, 1, 1, 1)
        t_in = t.to(device).repeat(copies)
        states = conditioning_batch(cond.cond, cond.uncond, cond.negative).to(device, self.dtype)
        camera = cond.camera.to(device, self.dtype).repeat(copies, 1)  # every branch sees the cameras
        output = self._unet(x_in.to(self.dtype), t_in, encoder_hidden_states=states, class_labels=camera).sample.float()
        eps = epsilon_from_output(output, x_in, self._alphas.to(device)[t_in], self.prediction_type)
        eps_c, eps_u, eps_n = split_predictions(eps.to(x_t.device), batch, cond.negative is not None)
        return NoisePrediction(cond=eps_c, uncond=eps_u, negative=eps_n, negative_weights=cond.negative_weights)
