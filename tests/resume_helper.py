"""A checkpointed 3-agent x 3-round debate whose agents log each call; run by test_durable.py.

python -m tests.resume_helper LOG DB THREAD [--resume]
"""

from __future__ import annotations

import os
import sys
import time

import moot
from moot.testing import ScriptedChatModel


def logging_agent(log_path: str, resuming: bool) -> ScriptedChatModel:
    """Round 1 takes 0.4 s a call; the first run's round 2 sleeps long, so the test kills it in
    flight however slow the machine; a resumed run's calls take 0.4 s."""

    def respond(messages) -> str:
        name = messages[0].text.split("Your name is ")[1].rstrip(".")
        round = len(messages) // 2
        with open(log_path, "a") as log:
            log.write(f"start {name} {round}\n")
        time.sleep(0.4 if resuming or round == 1 else 60)
        with open(log_path, "a") as log:
            log.write(f"done {name} {round}\n")
            log.flush()
            os.fsync(log.fileno())
        return f"Answer: {round}"

    return ScriptedChatModel(respond=respond)


def main() -> None:
    log_path, database, thread = sys.argv[1:4]
    model = logging_agent(log_path, resuming="--resume" in sys.argv)
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(3)],
        protocol=moot.Debate(rounds=3),
    )
    if "--resume" in sys.argv:
        result = society.resume(checkpoint=database, thread_id=thread)
    else:
        result = society.run("What is 1+1?", checkpoint=database, thread_id=thread)
    print(result.model_dump_json())


if __name__ == "__main__":
    main()
