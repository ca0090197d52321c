"""examples/societies/cascade.yaml, in Python (the last tier would be a stronger model)."""

import sys

import moot

cheap = moot.load_model("local")
quick = [
    moot.Agent(name=f"quick{i}", model=cheap, temperature=1.0, max_tokens=48) for i in (1, 2, 3)
]
careful = moot.Agent(name="careful", model=cheap, temperature=0.2, max_tokens=160)
society = moot.Society(
    agents=[*quick, careful],
    protocol=moot.Cascade(
        tiers=[[a.name for a in quick], ["careful"]], threshold=0.66, confidence="agreement"
    ),
)
result = society.run(sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?")
for tier in result.details["tiers"]:
    print(tier["tier"], tier["answer"], f"{tier['confidence']:.2f}", tier["usage"]["total_tokens"])
print(result.answer, result.stop_reason)
