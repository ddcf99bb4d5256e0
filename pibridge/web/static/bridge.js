/* The bridge's page: one card per sensor (state, counters, last values with their units, a chart
   per metric), one for the bridge (agent, queue, clock), all from the "state" events of
   /api/events. Read-only. */
"use strict";
(() => {
  const {el, clockTime, duration, live, chart} = PB;
  const cards = new Map();        // sensor name -> {card, ...}
  const charts = new Map();       // "sensor\u0000key" -> chart
  let bound = 720;

  function fact(table, label, value) {
    table.append(el("tr", {}, el("td", {text: label}), el("td", {}, el("b", {text: value}))));
  }

  function renderBridge(doc) {
    const bridge = doc.bridges[0], s = bridge.status, now = s.written_at;
    document.getElementById("profile").textContent = "— " + s.profile.split("/").pop();
    document.title = "pibridge — " + doc.health;
    const failing = s.sensors.filter((x) => x.state === "failing").length;
    document.getElementById("summary").textContent = doc.health + " · " + s.sensors.length + " sensors" +
      (failing ? " · " + failing + " failing" : "") + " · up " + duration(now - s.started_at);
    const table = document.getElementById("bridge-facts");
    table.replaceChildren();
    const a = s.agent, q = s.queue, c = s.clock;
    fact(table, "agent", (a.connected ? "connected" : "not connected") + " (" + a.host + ":" + a.port + ")" +
      (a.since !== null ? " since " + clockTime(a.since) : ""));
    if (a.client_id) fact(table, "client id", a.client_id);
    fact(table, "last acknowledgement", a.last_ack_at === null ? "never" : clockTime(a.last_ack_at) +
      " (" + duration(now - a.last_ack_at) + " ago)");
    if (a.last_error) fact(table, "agent error", a.last_error);
    fact(table, "queue", q.depth + " samples waiting" + (q.oldest_sample_at !== null ?
      ", oldest " + duration(now - q.oldest_sample_at) + " old" : ""));
    fact(table, "unstamped / dropped / dead letters", q.unstamped + " / " + q.dropped + " / " + q.dead_letters);
    fact(table, "clock", (c.synchronised ? "synchronised" : "NOT synchronised") + (c.source ? " (" + c.source + ")" : ""));
    if (bridge.reasons.length) fact(table, "attention", bridge.reasons.join("; "));
    if (s.restart_pending.length) fact(table, "restart pending for", s.restart_pending.join(", "));
  }

  function sensorCard(sensor) {
    let entry = cards.get(sensor.name);
    if (entry) return entry;
    const card = el("section", {"class": "card sensor", "data-sensor": sensor.name});
    const badge = el("span", {"class": "badge"});
    const facts = el("div", {"class": "facts"});
    const error = el("div", {"class": "error"});
    const metrics = el("div");
    card.append(el("h2", {}, el("span", {text: sensor.name}), badge), facts, error, metrics);
    document.getElementById("cards").append(card);
    entry = {card, badge, facts, error, metrics, values: new Map()};
    cards.set(sensor.name, entry);
    return entry;
  }

  function metricBlock(entry, sensorName, key, shown) {
    let block = entry.values.get(key);
    if (block) return block;
    const value = el("div", {"class": "value", "data-metric": key});
    const box = el("div", {"class": "chart"});
    const node = el("div", {"class": "metric"}, el("div", {"class": "label", text: shown.name}), value, box);
    entry.metrics.append(node);
    block = {value, box, plot: null};
    entry.values.set(key, block);
    if (typeof shown.number === "number" || typeof shown.number === "boolean") {
      block.plot = chart(box, shown.symbol, shown.name);
      charts.set(sensorName + "\u0000" + key, block.plot);
      const query = "sensor=" + encodeURIComponent(sensorName) + "&metric=" + encodeURIComponent(key);
      fetch("/api/history?" + query, {cache: "no-store"}).then((r) => r.ok ? r.json() : null).then((h) => {
        if (!h) return;
        bound = h.bound;
        block.plot.merge(h.ts, h.values);
      });
    }
    return block;
  }

  function renderSensor(sensor, shown, now) {
    const entry = sensorCard(sensor);
    entry.card.dataset.state = sensor.state;
    entry.card.dataset.taken = sensor.taken;
    entry.card.classList.toggle("failing", sensor.state === "failing");
    entry.badge.className = "badge " + sensor.state;
    entry.badge.textContent = sensor.state === "failing" && sensor.failing_since !== null ?
      "failing since " + clockTime(sensor.failing_since) + " (" + duration(now - sensor.failing_since) + ")" :
      sensor.state;
    entry.error.textContent = sensor.state === "failing" ? (sensor.last_error || "no reading") : "";
    entry.facts.textContent = sensor.driver + " · every " + sensor.interval_s + " s · taken " + sensor.taken +
      " · pushed " + sensor.pushed + " · failed " + sensor.failed + " · skipped " + sensor.skipped +
      " · dead-lettered " + sensor.dead_lettered + " · last sample " +
      (sensor.last_sample_at === null ? "never" : clockTime(sensor.last_sample_at));
    for (const [key, value] of Object.entries(shown || {})) {
      metricBlock(entry, sensor.name, key, value).value.textContent = value.text;
    }
  }

  function onState(data) {
    const doc = data.status, status = doc.bridges[0].status;
    renderBridge(doc);
    const names = new Set();
    for (const sensor of status.sensors) { names.add(sensor.name); renderSensor(sensor, data.shown[sensor.name], status.written_at); }
    for (const [name, entry] of cards) if (!names.has(name)) { entry.card.remove(); cards.delete(name); }
    for (const [sensorName, byKey] of Object.entries(data.points || {})) {
      for (const [key, [ts, values]] of Object.entries(byKey)) {
        const plot = charts.get(sensorName + "\u0000" + key);
        if (plot) { plot.append(ts, values); plot.trim(bound); }
      }
    }
  }

  live("/api/events", onState);
})();
