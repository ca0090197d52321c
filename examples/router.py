"""examples/societies/router.yaml, in Python."""

import sys

import moot

society = moot.Society(
    agents=[
        moot.Agent(name="maths", description="arithmetic and numbers", max_tokens=128),
        moot.Agent(name="words", description="language and spelling", max_tokens=128),
    ],
    protocol=moot.Router(
        rules={"maths": [r"\d+\s*[-+*/]\s*\d+", "sum|product"], "words": ["spell|letter|word"]}
    ),
    aggregator=moot.MajorityVote(extract="text"),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
print(result.details["route"], result.answer)
