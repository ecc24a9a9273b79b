"""A tiny vision-transformer-style encoder for MNIST-1D. Attention is written out (one qkv Linear,
matmul → softmax → matmul) rather than nn.MultiheadAttention or scaled_dot_product_attention, so that
quantization and pruning see every Linear and every matmul as an ordinary graph op."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelLoadError


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ModelLoadError(f"the embedding width {dim} must be divisible by the number of heads {heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, 3·D) → (3, B, heads, T, head_dim); shape[0] and -1 keep batch and length symbolic
        qkv = self.qkv(x).reshape(x.shape[0], -1, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q * self.scale, k.transpose(-2, -1))
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(x.shape[0], -1, self.dim)
        return self.proj(out)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    """Conv1d patch embedding (kernel = stride = ``patch``), learned positional embedding, ``depth`` encoder
    blocks, final LayerNorm, mean over tokens, Linear head; input (B, in_channels, length)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, *, length: int = 40, patch: int = 4,
                 dim: int = 64, heads: int = 4, depth: int = 2, mlp_ratio: int = 2) -> None:
        super().__init__()
        if length % patch:
            raise ModelLoadError(f"the input length {length} must be a multiple of the patch size {patch}")
        self.input_shape = (in_channels, length)
        self.patch_embed = nn.Conv1d(in_channels, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, length // patch, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).transpose(1, 2) + self.pos_embed  # (B, tokens, dim)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, *self.input_shape),)
