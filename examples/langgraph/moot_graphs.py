"""moot societies as LangGraph Server graphs (written by `moot langgraph`)."""

from pathlib import Path

from moot.integrations.langgraph_server import society_graph

HERE = Path(__file__).parent
MODEL = None
"""The model of every agent (None: each society's own)."""

cascade = society_graph(HERE / "../societies/cascade.yaml", model=MODEL)
critic = society_graph(HERE / "../societies/critic.yaml", model=MODEL)
debate = society_graph(HERE / "../societies/debate.yaml", model=MODEL)
judge = society_graph(HERE / "../societies/judge.yaml", model=MODEL)
machinesom = society_graph(HERE / "../societies/machinesom.yaml", model=MODEL)
mixture = society_graph(HERE / "../societies/mixture.yaml", model=MODEL)
pipeline = society_graph(HERE / "../societies/pipeline.yaml", model=MODEL)
rank = society_graph(HERE / "../societies/rank.yaml", model=MODEL)
router = society_graph(HERE / "../societies/router.yaml", model=MODEL)
topology = society_graph(HERE / "../societies/topology.yaml", model=MODEL)
