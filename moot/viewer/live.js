// The live page of a run served by `moot serve`. It follows the run's server-sent events
// (#run's data-events URL): "state" (waiting, running), "turn" (a finished turn's cell, as the
// static page draws it), "vote" (a closed round's vote cell), then "result" (the whole static
// page of the run, which takes the live one's place) or "failed" (why the run ended without
// one). Cells arrive as HTML the server escaped; agents' names are set as text.
(() => {
  const run = document.getElementById("run");
  const grid = document.getElementById("grid");
  const status = document.getElementById("status");
  const agents = JSON.parse(run.dataset.agents);
  let turns = 0;

  const element = (html) => {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  };

  const column = (agent) => {
    // An agent the page did not list (a judge, an aggregator) gets a column before "vote".
    if (!agents.includes(agent)) {
      agents.push(agent);
      for (const row of grid.rows) {
        const fresh = document.createElement(row === grid.rows[0] ? "th" : "td");
        if (row === grid.rows[0]) fresh.textContent = agent;
        row.lastElementChild.before(fresh);
      }
    }
    return agents.indexOf(agent) + 1;
  };

  const row = (round) => {
    const rows = [...grid.rows].slice(1);
    const found = rows.find((each) => each.dataset.round === String(round));
    if (found) return found;
    const fresh = document.createElement("tr");
    fresh.dataset.round = String(round);
    const label = document.createElement("th");
    label.textContent = `round ${round}`;
    fresh.append(label);
    for (let i = 0; i < agents.length; i++) fresh.append(document.createElement("td"));
    const vote = document.createElement("td");
    vote.className = "vote";
    fresh.append(vote);
    const later = rows.find((each) => Number(each.dataset.round) > round);
    if (later) later.before(fresh);
    else grid.rows[0].parentNode.append(fresh);
    return fresh;
  };

  const source = new EventSource(run.dataset.events);
  source.addEventListener("state", (event) => {
    status.textContent = JSON.parse(event.data).text;
  });
  source.addEventListener("turn", (event) => {
    const data = JSON.parse(event.data);
    const index = column(data.agent);
    row(data.round).cells[index].replaceWith(element(data.html));
    turns += 1;
    status.textContent = `running · round ${data.round} · ${turns} turns finished`;
  });
  source.addEventListener("vote", (event) => {
    const data = JSON.parse(event.data);
    row(data.round).lastElementChild.replaceWith(element(data.html));
  });
  source.addEventListener("result", (event) => {
    source.close();
    run.innerHTML = JSON.parse(event.data).html;
    run.dataset.over = "result";
  });
  source.addEventListener("failed", (event) => {
    source.close();
    const data = JSON.parse(event.data);
    status.textContent = data.message;
    status.classList.add("failed");
    document.querySelector("#final-answer b").textContent = `none (${data.status})`;
    run.dataset.over = data.status;
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && !run.dataset.over) {
      status.textContent = "the server no longer has this run (restarted, or the run was dropped)";
      status.classList.add("failed");
    }
  };
})();
