"""examples/societies/mixture.yaml, in Python."""

import sys

import moot

proposers = [moot.Agent(name=f"proposer{i}", role="proposer", max_tokens=128) for i in (1, 2, 3)]
society = moot.Society(
    agents=proposers,
    protocol=moot.MixtureOfAgents(layers=2),
    aggregator=moot.Judge(
        agent=moot.Agent(name="synthesiser", role="aggregator", max_tokens=128), extract="number"
    ),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
print(result.answer, result.usage)
