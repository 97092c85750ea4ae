"""The Llama-style decoder in torch, read top to bottom (the training-time reference).

RMSNorm -> attention with rotary positions (rotate-half convention, as Hugging Face Llama)
-> RMSNorm -> SwiGLU MLP, n_layers times; a final RMSNorm; tied embeddings as the lm head (or, with
Architecture.tie_embeddings False, a separate classifier `output.weight` [V, D], as imported llama2.c
checkpoints may have).
The ONNX graphs (export/onnx_graph.py) are built from this module's weights and are held to
its logits by tests. The architecture numbers come from pocketlm.manifest.Architecture, the
same definition the manifest records.

Shapes: B batch, T new positions, P cached positions, D dim, H heads, K kv heads, Hd head dim.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pocketlm.manifest import Architecture


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # x: [..., D]
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(arch: Architecture, device=None):
    """cos, sin: [max_seq_len, Hd/2] — the same tables the ONNX graph stores as initializers."""
    half = arch.head_dim // 2
    inv_freq = 1.0 / (arch.rope_theta ** (torch.arange(0, half, dtype=torch.float64) / half))
    pos = torch.arange(arch.max_seq_len, dtype=torch.float64)
    angles = torch.outer(pos, inv_freq)  # [max_seq_len, Hd/2]
    return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rope(x, cos, sin):
    """x: [B, T, heads, Hd]; cos/sin: [T, Hd/2] (rows for the positions of x). Rotate-half pairs (i, i+Hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)  # each [B, T, heads, Hd/2]
    if cos.dim() == 2:  # [T, Hd/2]: same positions for every batch row
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [B or 1, T, 1, Hd/2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = arch.n_heads, arch.n_kv_heads, arch.head_dim
        self.wq = nn.Linear(arch.dim, arch.n_heads * arch.head_dim, bias=False)
        self.wk = nn.Linear(arch.dim, arch.n_kv_heads * arch.head_dim, bias=False)
        self.wv = nn.Linear(arch.dim, arch.n_kv_heads * arch.head_dim, bias=False)
        self.wo = nn.Linear(arch.n_heads * arch.head_dim, arch.dim, bias=False)

    def forward(self, x, cos, sin, past=None, mask=None):
        """x: [B, T, D]; past: optional (k, v) each [B, P, K, Hd]. Returns out [B, T, D], (k, v) [B, P+T, K, Hd].

        cos/sin: [T, Hd/2] or [B, T, Hd/2]; mask: optional bool [B, T, P+T] (True = may attend),
        default causal over the new positions with every cached one visible.
        """
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=1)  # [B, P+T, K, Hd]
            v = torch.cat([past[1], v], dim=1)
        present = (k, v)
        rep = self.n_heads // self.n_kv_heads
        kh = k.repeat_interleave(rep, dim=2).transpose(1, 2)  # [B, H, P+T, Hd]
        vh = v.repeat_interleave(rep, dim=2).transpose(1, 2)
        qh = q.transpose(1, 2)  # [B, H, T, Hd]
        P = kh.shape[2] - T
        if mask is None:  # causal over the new positions; every cached position is visible
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
        else:
            mask = mask[:, None]  # [B, 1, T, P+T], broadcast over heads
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)  # [B, H, T, Hd]
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.wo(out), present


class MLP(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.w_gate = nn.Linear(arch.dim, arch.hidden_dim, bias=False)
        self.w_up = nn.Linear(arch.dim, arch.hidden_dim, bias=False)
        self.w_down = nn.Linear(arch.hidden_dim, arch.dim, bias=False)

    def forward(self, x):  # [B, T, D] -> [B, T, D]
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, arch: Architecture, dropout: float = 0.0):
        super().__init__()
        self.attn_norm = RMSNorm(arch.dim, arch.norm_eps)
        self.attn = Attention(arch)
        self.mlp_norm = RMSNorm(arch.dim, arch.norm_eps)
        self.mlp = MLP(arch)
        self.drop = nn.Dropout(dropout)  # on each residual branch, training only (identity in eval)

    def forward(self, x, cos, sin, past=None, mask=None):
        h, present = self.attn(self.attn_norm(x), cos, sin, past, mask)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.mlp_norm(x))), present


class Transformer(nn.Module):
    def __init__(self, arch: Architecture, dropout: float = 0.0):
        """dropout: on the embeddings and every residual branch while training; the exported graphs
        (inference) have none, so it changes the weights learnt, never the architecture."""
        super().__init__()
        arch.validate()
        self.arch = arch
        self.tok_embeddings = nn.Embedding(arch.vocab_size, arch.dim)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(Block(arch, dropout) for _ in range(arch.n_layers))
        self.norm = RMSNorm(arch.dim, arch.norm_eps)
        self.output = None if arch.tie_embeddings else nn.Linear(arch.dim, arch.vocab_size, bias=False)
        cos, sin = rope_tables(arch)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual projections
            if name.endswith("wo.weight") or name.endswith("w_down.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * arch.n_layers) ** 0.5)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids, start_pos: int = 0, past=None, positions=None, mask=None):
        """ids: [B, T] int64. past: optional list of (k, v) per layer, each [B, P, K, Hd], P == start_pos.

        Training packs several queries behind one schema: then `positions` [B, T] gives each
        token's position and `mask` [B, T, T] (bool, True = may attend) which tokens it sees.
        Returns logits [B, T, vocab] and the per-layer (k, v) including the new positions.
        """
        T = ids.shape[1]
        if positions is None:
            if start_pos + T > self.arch.max_seq_len:
                raise ValueError(f"{start_pos + T} positions exceed max_seq_len {self.arch.max_seq_len}")
            cos = self.rope_cos[start_pos : start_pos + T]  # [T, Hd/2]
            sin = self.rope_sin[start_pos : start_pos + T]
        else:
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # [B, T, Hd/2]
        x = self.drop(self.tok_embeddings(ids))  # [B, T, D]
        presents = []
        for i, layer in enumerate(self.layers):
            x, present = layer(x, cos, sin, None if past is None else past[i], mask)
            presents.append(present)
        x = self.norm(x)
        if self.output is not None:  # untied classifier
            return self.output(x), presents  # [B, T, vocab]
        logits = x @ self.tok_embeddings.weight.T  # tied lm head: [B, T, vocab]
        return logits, presents
