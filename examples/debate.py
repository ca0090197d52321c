"""examples/societies/debate.yaml, in Python: python examples/debate.py "What is 12+30?" """

import sys

import moot

agents = [moot.Agent(name=f"agent{i}", role="debater", max_tokens=128) for i in (1, 2, 3)]
society = moot.Society(
    agents=agents,
    protocol=moot.Debate(rounds=2),
    aggregator=moot.MajorityVote(extract="number"),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
print(result.answer, result.usage)
