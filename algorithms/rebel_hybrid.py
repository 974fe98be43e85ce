"""Hybrid REBEL (REBEL paper, Section 2 and the hybrid setting of its analysis): y from pi_t, y' from the data set.

The same regression as REBEL (algorithms/rebel.py), with mu = the offline data set for the second response:
    loss = mean( [logp_theta(y) - logp_t(y)] - [logp_theta(y') - logp_t(y')] - eta * (r(y) - r(y')) )^2
where y' is the prompt's human reference, scored (reward model, KL to pi_ref, pi_t log-probs) like a sample.
"""
from __future__ import annotations

from dataclasses import dataclass

from algorithms.base import register
from algorithms.rebel import Rebel


@register("rebel_hybrid")
@dataclass
class HybridRebel(Rebel):
    """Hybrid REBEL: regress relative rewards of an on-policy sample and the human reference"""

    samples_per_prompt: int = 1
    """sampled responses y; the backbone appends the reference y' as the second of the pair"""

    data = "online_with_reference"

    def __post_init__(self):
        if self.samples_per_prompt != 1:
            raise ValueError("hybrid REBEL pairs one sample with the reference: samples_per_prompt must be 1")
