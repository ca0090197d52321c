"""examples/societies/machinesom.yaml, in Python (see also moot.presets.machinesom_grid)."""

import sys

import moot

agents = [
    moot.Agent(name="bold", trait="overconfident", max_tokens=128),
    moot.Agent(name="calm1", trait="easy-going", max_tokens=128),
    moot.Agent(name="calm2", trait="easy-going", max_tokens=128),
]
society = moot.Society(
    agents=agents,
    protocol=moot.Debate(strategy=["debate", "reflect", "debate"]),
    aggregator=moot.MajorityVote(extract="number", min_votes=2),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
for stats in result.conformity:
    print(stats.round, stats.answers, stats.changed, f"{stats.agreement:.0%}")
print(result.answer, result.usage)
