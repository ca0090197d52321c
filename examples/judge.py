"""examples/societies/judge.yaml, in Python."""

import sys

import moot

society = moot.Society(
    agents=[moot.Agent(name=f"agent{i}", max_tokens=128) for i in (1, 2, 3)],
    protocol=moot.Debate(rounds=2),
    aggregator=moot.Judge(agent=moot.Agent(name="judge", role="judge", max_tokens=128)),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
print(result.answer, result.turns[-1].text)
