"""Tiny models covering the layer patterns techniques and exporters must handle (conv-BN-ReLU in 1-D and
2-D, a residual add, pooling, plain linear layers). All are torch.fx-traceable and take a batch of any size."""

from __future__ import annotations

import torch
from torch import nn


class TinyConv1d(nn.Module):
    """Conv1d-BN-ReLU twice, flatten, Linear; input (B, 1, 16)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm1d(16)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.flatten(x))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 1, 16),)


class TinyResidual2d(nn.Module):
    """Conv2d-BN-ReLU, a basic residual block (two convs, add, ReLU), max pool, global average pool,
    Linear; input (B, 3, 8, 8)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(8)
        self.relu3 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(x + self.bn3(self.conv3(y)))
        return self.fc(self.flatten(self.gap(self.pool(x))))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 3, 8, 8),)


class TinyMLP(nn.Module):
    """Linear-ReLU-Linear; input (B, 20)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 20),)


def with_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """Random running statistics (mean in ±0.5, variance in 0.5–2) on every batch norm, so that folding
    batch norm into the conv before it is not the identity. Changes ``model`` in place and returns it."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
    return model


class TinyTokenEncoder(nn.Module):
    """A two-input text encoder in miniature: token ids and an attention mask (both int64, (B, L)) → embedding,
    LayerNorm, one self-attention block written out (masked with a large negative number, as Hugging Face
    models do), a GELU feed-forward, masked mean pooling. Its forward branches on a shape in Python, which
    torch.fx cannot trace (torch.export can), like many real transformer implementations."""

    def __init__(self, vocab: int = 50, width: int = 16, seq_len: int = 8) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.embed = nn.Embedding(vocab, width)
        self.norm1 = nn.LayerNorm(width)
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.attn_out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.seq_len:  # Python control flow on a shape
            input_ids, attention_mask = input_ids[:, :self.seq_len], attention_mask[:, :self.seq_len]
        x = self.norm1(self.embed(input_ids))
        scores = self.query(x) @ self.key(x).transpose(1, 2) / x.shape[-1] ** 0.5
        scores = scores + (1.0 - attention_mask[:, None, :].float()) * torch.finfo(torch.float32).min
        x = self.norm2(x + self.attn_out(scores.softmax(-1) @ self.value(x)))
        x = x + self.down(nn.functional.gelu(self.up(x)))
        mask = attention_mask.unsqueeze(-1).float()
        return (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        ids = torch.randint(1, self.embed.num_embeddings, (batch_size, self.seq_len))
        lengths = torch.randint(2, self.seq_len + 1, (batch_size, 1))
        mask = (torch.arange(self.seq_len)[None, :] < lengths).long()
        return ids * mask, mask


class TinyWide1d(nn.Module):
    """Conv1d(16→32, k5) → Linear(256→128) → Linear(128→10): weights large enough (2.5k–33k) for the exporter's
    compact storage of sparse and clustered weights; input (B, 16, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(32 * 8, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 16, 8),)
