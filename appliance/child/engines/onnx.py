"""Sentence embeddings on ONNX Runtime, and rerank by their cosine.

A BERT-style encoder (all-MiniLM-L6-v2 by default) with a Hugging Face tokenizer:
tokens in, ``last_hidden_state`` out, mean-pooled over the attention mask, L2-normalised.
Rerank scores are query/document cosines of those vectors: a bi-encoder standing in
where a cross-encoder would be better, behind the same API so one can replace it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from appliance.child.engines.base import Engine, resolve, shorten
from appliance.config.backends import OnnxModel


class OnnxEngine(Engine):
    """An ONNX sentence encoder."""

    def __init__(self, config: OnnxModel) -> None:
        super().__init__(config.name)
        import onnxruntime
        from tokenizers import Tokenizer

        opts = config.options
        self.options = opts
        self.kind = config.type
        self.tokenizer = Tokenizer.from_file(str(resolve(opts.tokenizer)))
        self.tokenizer.enable_truncation(max_length=opts.max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        session = onnxruntime.SessionOptions()
        session.intra_op_num_threads = opts.n_threads or os.cpu_count() or 1
        session.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(resolve(opts.model)), session, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        width = self.session.get_outputs()[0].shape[-1]
        self.dimensions = width if isinstance(width, int) else len(self._encode(["x"])[0][0])

    def warm_up(self) -> None:
        """One short text through the encoder."""
        self._encode(["warm up"])

    def embed(self, texts: list[str], dimensions: int | None = None) -> tuple[Any, int]:
        # Float32 arrays: orjson serialises them directly, far faster than lists.
        vectors, tokens = self._encode(texts)
        return shorten(list(vectors.astype(np.float32)), dimensions), tokens

    def rerank(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        vectors, tokens = self._encode([query, *documents])
        scores = vectors[1:] @ vectors[0]
        return [round(float(s), 6) for s in scores], tokens

    def _encode(self, texts: list[str]) -> tuple[Any, int]:
        out: list[Any] = []
        tokens = 0
        size = self.options.batch_size
        for start in range(0, len(texts), size):
            batch = self.tokenizer.encode_batch(texts[start : start + size])
            ids = np.array([e.ids for e in batch], dtype=np.int64)
            mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feed)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            if self.options.normalize:
                norms = np.linalg.norm(pooled, axis=1, keepdims=True)
                pooled = pooled / np.clip(norms, 1e-12, None)
            out.append(pooled)
            tokens += int(mask.sum())
        return np.concatenate(out), tokens
