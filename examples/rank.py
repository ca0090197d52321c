"""examples/societies/rank.yaml, in Python."""

import sys

import moot

society = moot.Society(
    agents=[moot.Agent(name=f"candidate{i}", temperature=0.9, max_tokens=96) for i in (1, 2, 3)],
    protocol=moot.Debate(rounds=1),
    aggregator=moot.PairwiseRank(
        judge=moot.Agent(name="judge", role="judge", max_tokens=96),
        fuser=moot.Agent(name="fuser", role="aggregator", max_tokens=128),
        top_k=2,
    ),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
print(result.answer, result.usage)
