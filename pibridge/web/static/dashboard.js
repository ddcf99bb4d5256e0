/* The emulator's dashboard: every client's sensors and metrics with a chart per metric over the
   chosen range; on each "inventory" event the charts of metrics that got values are fetched again
   (a range query on the server; "all" downsampled there). */
"use strict";
(() => {
  const {el, clockTime, live, chart} = PB;
  let range = "1h";
  const cards = new Map();      // sensor key -> card
  const metrics = new Map();    // metric row -> {block, plot, lastTs}
  window.pbDashboard = {series: {}};   // what each chart shows (the browser tests read it)

  function load(row) {
    const entry = metrics.get(row);
    if (!entry.plot) return;
    fetch("/api/values?metric=" + row + "&range=" + range, {cache: "no-store"})
      .then((r) => r.ok ? r.json() : null).then((data) => {
        if (!data) return;
        entry.plot.set(data.ts, data.values);
        window.pbDashboard.series[row] = {ts: data.ts, values: data.values, downsampled: data.downsampled};
        entry.note.textContent = data.ts.length + (data.downsampled ? " points (averaged from " + data.count + " values)" : " values") +
          " in range" + (data.ts.length ? ", from " + clockTime(data.ts[0]) : "");
      });
  }

  function render(inventory) {
    let sensorCount = 0;
    for (const client of inventory.clients) {
      for (const sensor of client.sensors) {
        sensorCount++;
        const key = client.clientId + "/" + sensor.sensorId;
        let card = cards.get(key);
        if (!card) {
          card = el("section", {"class": "card sensor", "data-sensor": sensor.name},
                    el("h2", {}, el("span", {text: sensor.name})),
                    el("div", {"class": "facts", text: "client " + client.clientId + " · sensor " + sensor.sensorId}));
          document.getElementById("cards").append(card);
          cards.set(key, card);
        }
        for (const metric of sensor.metrics) {
          let entry = metrics.get(metric.row);
          const kind = metric.valueUnit ? metric.valueUnit : metric.valueType + (metric.valueAnnotation ? " (" + metric.valueAnnotation + ")" : "");
          if (!entry) {
            const value = el("div", {"class": "value", "data-metric": metric.metricId});
            const note = el("div", {"class": "facts"});
            const box = el("div", {"class": "chart"});
            card.append(el("div", {"class": "metric", "data-row": metric.row},
                           el("div", {"class": "label", text: metric.name + " · " + kind}), value, note, box));
            entry = {value, note, plot: metric.chartable ? chart(box, metric.unit, metric.name) : null, lastTs: null};
            metrics.set(metric.row, entry);
          }
          entry.value.textContent = metric.last_text + (metric.last_ts !== null ? " at " + clockTime(metric.last_ts) : "");
          if (entry.lastTs !== metric.last_ts || entry.firstTs !== metric.first_ts) {
            entry.lastTs = metric.last_ts; entry.firstTs = metric.first_ts;
            load(metric.row);
          }
        }
      }
    }
    document.getElementById("summary").textContent = inventory.clients.length + " clients · " + sensorCount + " sensors";
  }

  for (const button of document.querySelectorAll("#ranges button")) {
    button.onclick = () => {
      range = button.dataset.range;
      for (const other of document.querySelectorAll("#ranges button")) other.classList.toggle("on", other === button);
      for (const row of metrics.keys()) load(row);
    };
  }
  live("/api/events", render, "/api/inventory");
})();
