"""examples/societies/topology.yaml, in Python."""

import sys

import moot

agents = [moot.Agent(name="hub", max_tokens=128)]
agents += [moot.Agent(name=f"spoke{i}", max_tokens=128) for i in (1, 2, 3)]
society = moot.Society(
    agents=agents,
    protocol=moot.Debate(rounds=3, topology="star", hub="hub", peer_view="answer", consensus=1.0),
    aggregator=moot.MajorityVote(extract="number"),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
print(result.answer, result.stop_reason, result.usage)
