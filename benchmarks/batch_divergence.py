"""Where greedy outputs served in a batch leave the same request served alone, and how close the
target's top-2 logits were there (a near-tie: a batch changes llama.cpp's matmul shapes, so its
logits can differ from a lone sequence's in the last bits).

    python benchmarks/batch_divergence.py [--prompts 8] [--parallel 4] [--max-tokens 64]

The first --prompts HumanEval prompts (raw completion, as benchmarks/bench_server.py sends them),
each alone in a batch of one, then --parallel at a time; load-aware K, as `serve --parallel`.
Prints, per prompt, whether the two outputs are equal and, where not, the first differing position
and the target's top-2 logit margin there as each run measured it.
"""

from __future__ import annotations

import argparse

from bench_engine import humaneval_prompts  # a sibling script: benchmarks/ is on sys.path

from draftwise.config import GenerateConfig, SpecConfig
from draftwise.engine import Batch, Engine, Generation, Run
from draftwise.loader import BackendOptions, open_engine
from draftwise.policy.load import LoadAwareK


def serve(eng: Engine, prompts: list[str], n_seq: int, load: LoadAwareK,
          max_tokens: int) -> list[Generation]:
    """All prompts started together in one batch of n_seq sequences; their generations."""
    batch = Batch(eng, n_seq, 256, load)
    runs = [Run(eng, eng.prompt_ids(p), GenerateConfig(max_tokens=max_tokens), None, trace=True)
            for p in prompts]
    for r in runs:
        batch.add(r)
    while batch.runs:
        batch.step()
        for r in [r for r in batch.runs if r.done]:
            batch.remove(r)
    return [r.result() for r in runs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="qwen2.5-coder-1.5b-q8_0")
    ap.add_argument("--draft", default="qwen2.5-coder-0.5b-q4_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    prompts = humaneval_prompts(a.prompts)
    n = a.parallel
    with open_engine(a.target, a.draft, BackendOptions(threads=a.threads, n_ctx=1024, n_seq=n),
                     SpecConfig.parse("auto")) as eng:
        load = LoadAwareK()
        alone = [serve(eng, [p], n, load, a.max_tokens)[0] for p in prompts]
        together = [g for i in range(0, len(prompts), n)
                    for g in serve(eng, prompts[i:i + n], n, load, a.max_tokens)]
    same = 0
    for i, (x, y) in enumerate(zip(alone, together)):
        if x.tokens == y.tokens:
            same += 1
            print(f"prompt {i}: same ({len(x.tokens)} tokens)")
            continue
        j = next((j for j, (s, t) in enumerate(zip(x.tokens, y.tokens)) if s != t),
                 min(len(x.tokens), len(y.tokens)))
        print(f"prompt {i}: differs at token {j} of {len(x.tokens)}/{len(y.tokens)}: top-2 "
              f"margin {x.margins[j]:.3f} alone, {y.margins[j]:.3f} in the batch")
    print(f"same: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
