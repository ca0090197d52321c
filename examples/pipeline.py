"""examples/societies/pipeline.yaml, in Python."""

import sys

import moot

society = moot.Society(
    agents=[
        moot.Agent(
            name="parser", role="restate the question and list the numbers in it", max_tokens=96
        ),
        moot.Agent(name="solver", role="solve it step by step", max_tokens=128),
        moot.Agent(
            name="checker", role="check the solution and correct it if needed", max_tokens=128
        ),
    ],
    protocol=moot.Pipeline(),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
print(result.answer, result.usage)
