/* Shared by the bridge's page and the emulator's dashboard: DOM helpers, time formatting (local
   time), the token prompt, the event stream with its reconnect banner, and uPlot time charts. */
"use strict";
const PB = (() => {
  const TOKEN_COOKIE = "pibridge_token";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function clockTime(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const d = new Date(seconds * 1000), now = new Date();
    const time = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
    return d.toDateString() === now.toDateString() ? time : d.toLocaleDateString() + " " + time;
  }

  function duration(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  function banner(text) {
    const node = document.getElementById("banner");
    node.textContent = text || "";
    node.classList.toggle("shown", !!text);
  }

  /* Ask for the token once; it is kept in a cookie the server reads (same origin only). */
  function askToken(onDone) {
    const form = document.getElementById("login");
    form.classList.add("shown");
    form.onsubmit = (event) => {
      event.preventDefault();
      const token = document.getElementById("token").value.trim();
      document.cookie = TOKEN_COOKIE + "=" + encodeURIComponent(token) + "; path=/; SameSite=Strict; max-age=31536000";
      form.classList.remove("shown");
      onDone();
    };
  }

  /* The event stream: `onState(data)` for every "state" event. EventSource reconnects by itself
     (the server says retry: 1000); a closed stream (a 401, the server gone for good) is reopened
     here after a check of /api/status, which also tells a missing token apart. */
  function live(url, onState, checkUrl) {
    let source = null;
    function open() {
      source = new EventSource(url);
      source.addEventListener("state", (event) => { banner(""); onState(JSON.parse(event.data)); });
      source.onerror = () => {
        banner("connection lost — reconnecting…");
        if (source.readyState === EventSource.CLOSED) setTimeout(check, 1500);
      };
    }
    function check() {
      fetch(checkUrl || "/api/status", {cache: "no-store"}).then((answer) => {
        if (answer.status === 401) { banner("token required"); askToken(check); }
        else if (answer.ok) open();
        else setTimeout(check, 2000);
      }, () => setTimeout(check, 2000));
    }
    check();
  }

  /* A time chart (uPlot) of one series: x in local time, y labelled with its unit. */
  function chart(container, unit, label) {
    const width = () => Math.max(240, container.clientWidth || 300);
    const opts = {
      width: width(), height: 160, legend: {show: false}, cursor: {drag: {x: false, y: false}},
      scales: {x: {time: true}},
      axes: [{}, {label: unit || "", size: 72, labelSize: 16}],
      series: [{}, {label: label, stroke: "#1f6f43", width: 2, spanGaps: false,
                     value: (u, v) => v === null ? "–" : v + (unit ? " " + unit : "")}],
    };
    const plot = new uPlot(opts, [[], []], container);
    const data = {ts: [], values: []};
    new ResizeObserver(() => plot.setSize({width: width(), height: 160})).observe(container);
    function draw() {
      plot.setData([data.ts, data.values]);
      const real = data.values.filter((v) => v !== null).length;
      if (data.ts.length && (real <= 1 || data.ts[0] === data.ts[data.ts.length - 1])) {
        // one point alone: a minute around it, not an axis of years
        plot.setScale("x", {min: data.ts[0] - 30, max: data.ts[data.ts.length - 1] + 30});
      }
    }
    return {
      set(ts, values) { data.ts = ts.slice(); data.values = values.slice(); draw(); },
      /* a window fetched while events already added points: the window, then the newer ones */
      merge(ts, values) {
        const last = ts.length ? ts[ts.length - 1] : -Infinity;
        const keep = data.ts.map((t, i) => [t, data.values[i]]).filter(([t]) => t > last);
        data.ts = ts.concat(keep.map(([t]) => t));
        data.values = values.concat(keep.map(([, v]) => v));
        draw();
      },
      append(ts, values) {
        const last = data.ts.length ? data.ts[data.ts.length - 1] : -Infinity;
        let added = false;
        for (let i = 0; i < ts.length; i++) {
          if (ts[i] > last) { data.ts.push(ts[i]); data.values.push(values[i]); added = true; }
        }
        if (added) draw();
      },
      trim(maxPoints) {
        if (data.ts.length > maxPoints) { data.ts.splice(0, data.ts.length - maxPoints); data.values.splice(0, data.values.length - maxPoints); }
      },
      get points() { return data.ts.length; },
    };
  }

  return {el, clockTime, duration, banner, askToken, live, chart};
})();
