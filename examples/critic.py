"""examples/societies/critic.yaml, in Python."""

import sys

import moot

agents = [
    moot.Agent(name="writer", role="generator", max_tokens=128),
    moot.Agent(name="critic1", role="critic", max_tokens=96),
    moot.Agent(name="critic2", role="critic", max_tokens=96),
]
society = moot.Society(
    agents=agents,
    protocol=moot.CriticLoop(rounds=3),
    aggregator=moot.MajorityVote(extract="number"),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
print(result.answer, result.stop_reason, result.usage)
