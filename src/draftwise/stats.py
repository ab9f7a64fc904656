"""What a generation did and where its time went."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field

# The rolling window for the low-acceptance warning: long enough not to fire on one bad round.
_ROLLING = 32
LOW_ACCEPTANCE = 0.5


@dataclass
class Stats:
    """Counters for one generation. Times in seconds; t_draft / t_target are model forward calls."""

    n_prompt: int = 0
    n_generated: int = 0
    n_rounds: int = 0
    n_drafted: int = 0
    n_accepted: int = 0
    n_lenient: int = 0  # accepted tokens that exact verification would have rejected
    accept: str = "exact"  # the acceptance mode; anything else is lossy
    drafted_at: list[int] = field(default_factory=list)  # [K_max] rounds that drafted position i
    accepted_at: list[int] = field(default_factory=list)  # [K_max] rounds that accepted position i
    t_prefill: float = 0.0
    t_draft: float = 0.0
    t_target: float = 0.0
    t_decode: float = 0.0  # wall time of the decoding rounds (excludes prefill)
    k_used: list[int] = field(default_factory=list)  # K of each round (0 = no draft)
    finish_reason: str = ""
    low_acceptance: bool = False
    _recent: deque = field(default_factory=lambda: deque(maxlen=_ROLLING), repr=False)

    def record_round(self, k: int, n_accepted: int, n_new: int, n_lenient: int = 0) -> bool:
        """Count one round; returns True the first time rolling acceptance drops below 0.5."""
        self.n_rounds += 1
        self.n_generated += n_new
        self.n_drafted += k
        self.n_accepted += n_accepted
        self.n_lenient += n_lenient
        self.k_used.append(k)
        while len(self.drafted_at) < k:
            self.drafted_at.append(0)
            self.accepted_at.append(0)
        # Position i is reached only if 0..i-1 were accepted.
        for i in range(min(k, n_accepted + 1)):
            self.drafted_at[i] += 1
            self.accepted_at[i] += i < n_accepted
        if k:
            self._recent.append(n_accepted / k)
        if (not self.low_acceptance and len(self._recent) == self._recent.maxlen
                and sum(self._recent) / len(self._recent) < LOW_ACCEPTANCE):
            self.low_acceptance = True
            return True
        return False

    @property
    def alpha(self) -> float:
        """Acceptance rate: accepted / drafted tokens."""
        return self.n_accepted / self.n_drafted if self.n_drafted else 0.0

    @property
    def exact(self) -> bool:
        """Whether verification was exact (lossless), even if no token was kept leniently."""
        return self.accept == "exact"

    @property
    def tau(self) -> float:
        """Tokens per round (per target forward)."""
        return self.n_generated / self.n_rounds if self.n_rounds else 0.0

    @property
    def t_overhead(self) -> float:
        return max(0.0, self.t_decode - self.t_draft - self.t_target)

    @property
    def tok_s(self) -> float:
        return self.n_generated / self.t_decode if self.t_decode > 0 else 0.0

    @property
    def acceptance_at(self) -> list[float]:
        """[K_max] P(position i accepted | positions before it accepted)."""
        return [a / d if d else 0.0 for a, d in zip(self.accepted_at, self.drafted_at)]

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_") and k != "k_used"}
        d.update(alpha=self.alpha, tau=self.tau, tok_s=self.tok_s, t_overhead=self.t_overhead,
                 acceptance_at=self.acceptance_at, exact=self.exact,
                 mean_k=sum(self.k_used) / len(self.k_used) if self.k_used else 0.0)
        return d

    def line(self) -> str:
        """The one-line summary `generate` prints to stderr."""
        t = self.t_decode or 1e-9
        return (f"{self.n_generated} tokens in {self.t_decode:.2f}s = {self.tok_s:.1f} tok/s | "
                f"alpha {self.alpha:.2f} tau {self.tau:.2f} rounds {self.n_rounds} | "
                f"draft {100 * self.t_draft / t:.0f}% target {100 * self.t_target / t:.0f}% "
                f"overhead {100 * self.t_overhead / t:.0f}% | prefill {self.t_prefill:.2f}s "
                f"| {self.finish_reason}{self._lossy()}")

    def _lossy(self) -> str:
        return "" if self.exact else f" | accept {self.accept} (lossy): {self.n_lenient} lenient"
