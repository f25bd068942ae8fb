"""Shared fixtures of the sds-guidance tests: an isolated cache, offline hub, tiny diffusers models.

The tiny Stable Diffusion and IF pipelines are built from config (a few thousand parameters),
saved with `save_pretrained` to a temporary folder and loaded back by the backends from that
folder with HF_HUB_OFFLINE=1, so the real loading code runs without a network.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# compiled extensions (if any) and caches must never touch the user's folders
os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="sds-torch-ext-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_SIDE = 16  # RGB side of the tiny models; the tiny VAE downsamples by 2 (latents 8 x 8)
TEXT_DIM = 16
MAX_TOKENS = 16


@pytest.fixture(autouse=True)
def sds_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-session cache folder ($SDS_CACHE_DIR) shared by the tests (reference renders are reused)."""
    root = tmp_path_factory.getbasetemp() / "sds-cache"
    monkeypatch.setenv("SDS_CACHE_DIR", str(root))
    return root


def _clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    chars = [chr(i) for i in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def _t5_tokenizer() -> Any:
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz,."]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _tiny_unet(in_channels: int, out_channels: int, sample_size: int) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )


def build_tiny_sd(folder: Path, prediction_type: str) -> Path:
    """A tiny Stable Diffusion pipeline (UNet, VAE, CLIP text encoder, tokenizer), saved to `folder`."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=TEXT_DIM,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=len(tokenizer),
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_SIDE,
    )
    scheduler = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        steps_offset=1,
        clip_sample=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=_tiny_unet(4, 4, TINY_SIDE // 2),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_if(folder: Path) -> Path:
    """A tiny DeepFloyd IF stage-I pipeline (pixel UNet with learned variance, T5), saved to `folder`."""
    import torch
    from diffusers import DDPMScheduler, IFPipeline
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = _t5_tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_ff=32,
            d_kv=8,
            num_layers=1,
            num_heads=2,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    scheduler = DDPMScheduler(
        beta_schedule="squaredcos_cap_v2", variance_type="learned_range", prediction_type="epsilon"
    )
    pipe = IFPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=_tiny_unet(3, 6, TINY_SIDE),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """A factory of tiny model folders by kind: "sd-epsilon", "sd-v", "if"; each built once."""
    pytest.importorskip("diffusers")
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            folder = tmp_path_factory.mktemp(f"tiny-{kind}")
            if kind == "if":
                build_tiny_if(folder)
            else:
                build_tiny_sd(folder, {"sd-epsilon": "epsilon", "sd-v": "v_prediction"}[kind])
            built[kind] = folder
        return built[kind]

    yield get


@pytest.fixture
def context_factory() -> Callable[..., Any]:
    """BuildContext(device=cpu, prompt, total_steps) for building a guidance directly."""
    import torch

    from sds_core.protocols import BuildContext

    def make(prompt: str, config: dict[str, Any] | None = None) -> BuildContext:
        return BuildContext(device=torch.device("cpu"), prompt=prompt, total_steps=100, config=config or {})

    return make
