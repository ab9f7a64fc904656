"""Divergences between the target's top-k distribution and the draft's, per position.

The score stage keeps, per position, the target's k most likely tokens with their
log-probabilities and the probability mass of all other tokens. Both distributions are compared
on k + 1 bins: the k tokens, and "the rest" (the draft's mass outside those k tokens). By the data
processing inequality each divergence on the bins is a lower bound of the full one, tight when
the rest is small (top-32 of the Qwen targets holds >97% of the mass on most positions).
"""

from __future__ import annotations

LOSSES = ("fkl", "rkl", "tvd", "jsd", "ce", "top1")
_TINY = 1e-12


def bins(logits, idx, logp, rest):
    """(logP, logQ) [L, k + 1] log-probabilities of the k tokens and the rest.

    logits [L, V] draft logits; idx [L, k] the target's top-k token ids (int64); logp [L, k] the
    target's log-probabilities of them; rest [L] the target's mass outside them."""
    import torch

    lq = torch.log_softmax(logits.float(), dim=-1)
    lq_k = lq.gather(1, idx)
    lq_rest = lq.scatter(1, idx, float("-inf")).logsumexp(-1)  # exact, no 1 - sum cancellation
    log_q = torch.cat([lq_k, lq_rest[:, None]], dim=1)
    log_p = torch.cat([logp.float(), rest.float().clamp_min(_TINY).log()[:, None]], dim=1)
    return log_p, log_q


def divergence(kind: str, log_p, log_q):
    """[L] divergence per position: fkl KL(p||q), rkl KL(q||p), tvd 1/2 sum|p - q|,
    jsd the Jensen-Shannon divergence (beta 1/2), ce the cross-entropy -sum p log q (FKL plus
    p's entropy: with one-hot p, hard labels, the usual token cross-entropy), top1 -log q of the
    target's most likely token (hard labels from the target: only its greedy choice counts)."""
    import torch

    p, q = log_p.exp(), log_q.exp()
    if kind == "fkl":
        return (p * (log_p - log_q)).sum(-1)
    if kind == "rkl":
        return (q * (log_q - log_p)).sum(-1)
    if kind == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if kind == "top1":  # the k tokens' bins only: "the rest" is no token greedy decoding picks
        return -log_q.gather(1, log_p[:, :-1].argmax(-1, keepdim=True)).squeeze(1)
    if kind == "ce":
        return -(p * log_q).sum(-1)
    if kind == "jsd":
        log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0))
        return 0.5 * (p * (log_p - log_m)).sum(-1) + 0.5 * (q * (log_q - log_m)).sum(-1)
    raise ValueError(f"unknown loss {kind!r}")
