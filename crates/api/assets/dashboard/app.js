// longlink live dashboard: polls GET /v1/stats/summary once per second (each fetch with a
// timeout) and draws it. Vanilla JS, no dependencies; the charts are hand-made SVG.
//
// Test hooks: stable element ids (see index.html), #status reads "live" after a successful
// fetch and "disconnected — retrying" after a failed one, and document.body.dataset.updates
// counts the successful updates.
(function () {
  "use strict";

  const SUMMARY_URL = "/v1/stats/summary";
  const POLL_MS = 1000;
  const TIMEOUT_MS = 2500;
  const WINDOW_SECS = 120;
  const DASH = "—";
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  // ---------------------------------------------------------------- formatting

  const NF_INT = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const NF_1 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const NF_MS2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 2 });
  const NF_MS1 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

  const fmtInt = (v) => (isNum(v) ? NF_INT.format(v) : DASH);
  const fmtRate = (v) => (isNum(v) ? NF_1.format(v) : DASH);
  const fmtMsNum = (v) => (isNum(v) ? (Math.abs(v) >= 100 ? NF_MS1 : NF_MS2).format(v) : DASH);
  const fmtMs = (v) => (isNum(v) ? fmtMsNum(v) + " ms" : DASH);

  // A share as a percentage; never rounds up to 100% when something is missing.
  function fmtPct(rate) {
    if (!isNum(rate)) return DASH;
    if (rate >= 1) return "100%";
    const tenths = Math.floor(rate * 1000) / 10;
    return tenths.toFixed(1) + "%";
  }

  function fmtBytes(v) {
    if (!isNum(v)) return DASH;
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let n = v;
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? NF_INT.format(n) + " B" : NF_1.format(n) + " " + units[i];
  }

  function fmtDuration(ms) {
    if (!isNum(ms) || ms < 0) return DASH;
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return d + " d " + h + " h";
    if (h > 0) return h + " h " + m + " min";
    if (m > 0) return m + " min " + (s % 60) + " s";
    return s + " s";
  }

  function fmtAgo(ms) {
    if (!isNum(ms)) return DASH;
    if (ms < 0) ms = 0;
    if (ms < 10000) return NF_1.format(ms / 1000) + " s ago";
    return fmtDuration(ms) + " ago";
  }

  function fmtClock(ms) {
    if (!isNum(ms)) return DASH;
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // ---------------------------------------------------------------- DOM helpers

  function setText(id, text, title) {
    const el = $(id);
    if (!el) return;
    if (el.textContent !== text) el.textContent = text;
    if (title !== undefined && el.title !== title) el.title = title;
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null) continue;
        if (k === "text") node.textContent = v;
        else if (k === "class") node.className = v;
        else node.setAttribute(k, v);
      }
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function replaceRows(tbody, rows, emptyText, colspan) {
    if (!rows.length) {
      rows = [el("tr", null, [el("td", { class: "empty", colspan: String(colspan), text: emptyText })])];
    }
    tbody.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- charts

  // A "nice" step for about `target` intervals over [0, max].
  function niceStep(max, target) {
    const raw = max / target;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
    return nice * mag;
  }

  const NF_TICK = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

  function compactNumber(v) {
    if (Math.abs(v) >= 1e6) return NF_1.format(v / 1e6) + "M";
    if (Math.abs(v) >= 1e4) return NF_1.format(v / 1e3) + "k";
    return NF_TICK.format(v);
  }

  // A line chart over the last WINDOW_SECS seconds: one or more series that share a y axis,
  // gaps where a value is null, a hover cursor with a tooltip.
  class LineChart {
    constructor(container, legend, options) {
      this.container = container;
      this.legend = legend;
      this.series = options.series; // [{label, color}]
      this.format = options.format; // value -> text (tooltip, legend)
      this.minMax = options.minMax || 1;
      this.integer = Boolean(options.integer);
      this.area = options.area !== false;
      this.data = null; // {at: [ms], values: [[v]], now}
      this.hoverX = null;
      this.svg = svg("svg", { role: "img", "aria-label": options.title || "chart" });
      this.tip = el("div", { class: "tip", hidden: "" });
      container.append(this.svg, this.tip);
      this.svg.addEventListener("mousemove", (e) => {
        const box = this.svg.getBoundingClientRect();
        this.hoverX = e.clientX - box.left;
        this.draw();
      });
      this.svg.addEventListener("mouseleave", () => {
        this.hoverX = null;
        this.draw();
      });
      if (typeof ResizeObserver === "function") {
        new ResizeObserver(() => this.draw()).observe(container);
      }
      this.renderLegend();
    }

    update(at, values, now, intervalMs) {
      this.data = { at: at, values: values, now: now, intervalMs: intervalMs };
      this.renderLegend();
      this.draw();
    }

    renderLegend() {
      const items = this.series.map((s, i) => {
        const vals = this.data ? this.data.values[i] : [];
        const last = vals && vals.length ? vals[vals.length - 1] : null;
        return el("span", { class: "item" }, [
          el("span", { class: "swatch", style: "background:" + s.color }),
          el("span", { text: s.label }),
          el("span", { class: "val", text: isNum(last) ? this.format(last) : DASH }),
        ]);
      });
      this.legend.replaceChildren(...items);
    }

    draw() {
      const width = this.container.clientWidth;
      const height = this.container.clientHeight;
      if (width <= 0 || height <= 0) return;
      const pad = { left: 44, right: 8, top: 8, bottom: 22 };
      const plotW = Math.max(10, width - pad.left - pad.right);
      const plotH = Math.max(10, height - pad.top - pad.bottom);
      const root = this.svg;
      root.setAttribute("viewBox", "0 0 " + width + " " + height);
      root.replaceChildren();

      const data = this.data;
      const n = data ? data.at.length : 0;
      const end = n ? data.at[n - 1] : (data && data.now) || Date.now();
      const start = end - WINDOW_SECS * 1000;
      const xOf = (t) => pad.left + ((t - start) / (end - start)) * plotW;

      let max = 0;
      if (data) {
        for (const vals of data.values) {
          for (const v of vals) if (isNum(v) && v > max) max = v;
        }
      }
      max = Math.max(max, this.minMax);
      let step = niceStep(max, 4);
      if (this.integer) step = Math.max(1, Math.round(step));
      const top = Math.ceil(max / step) * step;
      const yOf = (v) => pad.top + plotH - (v / top) * plotH;

      // Grid and y labels.
      for (let v = 0; v <= top + step / 2; v += step) {
        const y = Math.round(yOf(v)) + 0.5;
        root.append(svg("line", { class: "gridline", x1: pad.left, x2: pad.left + plotW, y1: y, y2: y }));
        const label = svg("text", { class: "axis", x: pad.left - 6, y: y + 3.5, "text-anchor": "end" });
        label.textContent = compactNumber(v);
        root.append(label);
      }
      // x labels: seconds before the newest sample.
      for (let s = WINDOW_SECS; s >= 0; s -= 30) {
        const x = xOf(end - s * 1000);
        const label = svg("text", {
          class: "axis",
          x: x,
          y: height - 6,
          "text-anchor": s === WINDOW_SECS ? "start" : s === 0 ? "end" : "middle",
        });
        label.textContent = s === 0 ? "now" : "−" + (s >= 60 && s % 60 === 0 ? s / 60 + " min" : s + " s");
        root.append(label);
      }

      if (!n) {
        const text = svg("text", { class: "empty", x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle" });
        text.textContent = "waiting for samples…";
        root.append(text);
        this.tip.hidden = true;
        return;
      }

      // Series: an area and a line per run of non-null values; lone points as dots. Drawn last
      // to first, the later ones wider and translucent, so that equal series stay visible.
      const baseY = yOf(0);
      const order = this.series.map((s, i) => [s, i]).reverse();
      order.forEach(([s, i]) => {
        const under = i > 0;
        const vals = data.values[i] || [];
        let run = [];
        const flush = () => {
          if (run.length === 1) {
            root.append(svg("circle", { cx: run[0][0], cy: run[0][1], r: 2.2, style: "fill:" + s.color }));
          } else if (run.length > 1) {
            const line = run.map((p, k) => (k ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join(" ");
            const area = line + " L" + run[run.length - 1][0].toFixed(1) + " " + baseY + " L" + run[0][0].toFixed(1) + " " + baseY + " Z";
            if (this.area) root.append(svg("path", { class: "area", d: area, style: "fill:" + s.color }));
            const style = "stroke:" + s.color + (under ? ";stroke-width:3.2;stroke-opacity:0.6" : "");
            root.append(svg("path", { class: "line", d: line, style: style }));
          }
          run = [];
        };
        for (let k = 0; k < n; k += 1) {
          const t = data.at[k];
          const v = vals[k];
          // A missing sample (more than 2.5 intervals since the previous one) is a gap too.
          if (k > 0 && t - data.at[k - 1] > 2.5 * data.intervalMs) flush();
          if (isNum(v) && t >= start) run.push([xOf(t), yOf(v)]);
          else flush();
        }
        flush();
      });

      // Hover: the sample nearest to the cursor.
      if (this.hoverX === null || this.hoverX < pad.left || this.hoverX > pad.left + plotW) {
        this.tip.hidden = true;
        return;
      }
      let best = 0;
      for (let k = 1; k < n; k += 1) {
        if (Math.abs(xOf(data.at[k]) - this.hoverX) < Math.abs(xOf(data.at[best]) - this.hoverX)) best = k;
      }
      const x = xOf(data.at[best]);
      root.append(svg("line", { class: "cursor", x1: x, x2: x, y1: pad.top, y2: pad.top + plotH }));
      const rows = [el("div", { class: "t", text: fmtClock(data.at[best]) })];
      this.series.forEach((s, i) => {
        const v = (data.values[i] || [])[best];
        if (isNum(v)) root.append(svg("circle", { cx: x, cy: yOf(v), r: 3.2, style: "fill:" + s.color }));
        rows.push(el("div", null, [
          el("span", { class: "swatch", style: "background:" + s.color }),
          el("span", { text: s.label + ": " }),
          el("b", { text: isNum(v) ? this.format(v) : DASH }),
        ]));
      });
      this.tip.replaceChildren(...rows);
      this.tip.hidden = false;
      const tipW = this.tip.offsetWidth;
      const left = x + 12 + tipW > width ? x - 12 - tipW : x + 12;
      this.tip.style.left = Math.max(0, left) + "px";
      this.tip.style.top = pad.top + 4 + "px";
    }
  }

  const charts = {};

  function makeCharts() {
    charts.throughput = new LineChart($("chart-throughput"), $("legend-throughput"), {
      title: "messages and deliveries per second",
      series: [
        { label: "messages/s", color: "var(--teal)" },
        { label: "deliveries/s", color: "var(--violet)" },
      ],
      format: fmtRate,
      minMax: 4,
    });
    charts.connections = new LineChart($("chart-connections"), $("legend-connections"), {
      title: "open connections",
      series: [{ label: "connections", color: "var(--blue)" }],
      format: fmtInt,
      integer: true,
      minMax: 4,
    });
    charts.latency = new LineChart($("chart-latency"), $("legend-latency"), {
      title: "c2c end-to-end p99 latency",
      series: [{ label: "p99", color: "var(--amber)" }],
      format: fmtMs,
      minMax: 1,
      area: false,
    });
  }

  // ---------------------------------------------------------------- rendering a summary

  function renderLatency(prefix, l) {
    l = l || {};
    setText(prefix + "-count", fmtInt(l.count));
    for (const k of ["p50", "p90", "p99", "max"]) setText(prefix + "-" + k, fmtMs(l[k]));
  }

  function renderAppcodes(list) {
    const rows = Array.isArray(list) ? list : [];
    const maxSessions = rows.reduce((m, a) => Math.max(m, isNum(a.sessions) ? a.sessions : 0), 0);
    const shown = rows.slice(0, 10).map((a) => {
      const share = maxSessions > 0 && isNum(a.sessions) ? (100 * a.sessions) / maxSessions : 0;
      return el("tr", { "data-appcode": String(a.appcode) }, [
        el("td", { class: "mono strong", text: a.appcode === undefined || a.appcode === null ? DASH : String(a.appcode) }),
        el("td", { text: a.name || DASH }),
        el("td", { class: "n", text: fmtInt(a.sessions) }),
        el("td", null, [el("span", { class: "share" }, [el("span", { style: "width:" + share.toFixed(1) + "%" })])]),
        el("td", { class: "n", text: fmtInt(a.messages) }),
      ]);
    });
    if (rows.length > shown.length) {
      shown.push(el("tr", null, [el("td", { class: "empty", colspan: "5", text: "+ " + (rows.length - shown.length) + " more" })]));
    }
    replaceRows($("appcodes"), shown, "no appcodes configured", 5);
  }

  function renderGates(list, nowMs) {
    const rows = (Array.isArray(list) ? list : []).map((g) => {
      const healthy = g.healthy === true;
      const draining = g.draining === true;
      const lastSeen = isNum(g.last_seen_ms) && isNum(nowMs) ? nowMs - g.last_seen_ms : null;
      return el("tr", { "data-gate": g.id || "", "data-healthy": String(healthy), "data-draining": String(draining) }, [
        el("td", null, [
          el("div", { class: "strong", text: g.id || DASH }),
          el("div", { class: "mono muted small", text: g.addr || DASH }),
        ]),
        el("td", null, [el("span", { class: "badge " + (healthy ? "good" : "bad"), text: healthy ? "healthy" : "unhealthy" })]),
        el("td", null, [draining ? el("span", { class: "badge warn", text: "draining" }) : el("span", { class: "muted", text: "no" })]),
        el("td", { class: "n", text: fmtInt(g.connections) }),
        el("td", { class: "n", text: fmtInt(g.sessions) }),
        el("td", { class: "n muted", text: fmtAgo(lastSeen), title: isNum(g.last_seen_ms) ? new Date(g.last_seen_ms).toISOString() : "" }),
      ]);
    });
    replaceRows($("gates"), rows, "no gates", 6);
  }

  function render(s) {
    setText("node", s.node || DASH);
    setText("version", s.version || DASH);
    setText("uptime", isNum(s.now_ms) && isNum(s.started_ms) ? fmtDuration(s.now_ms - s.started_ms) : DASH);
    document.title = "longlink · " + (s.node || "dashboard");

    setText("connections", fmtInt(s.connections));
    setText("sessions", fmtInt(s.sessions));
    setText("messages-per-sec", fmtRate(s.messages_per_sec));
    setText("deliveries-per-sec", fmtRate(s.deliveries_per_sec));
    setText("delivery-rate", fmtPct(s.delivery_rate));
    const rateEl = $("delivery-rate");
    rateEl.classList.toggle("good", isNum(s.delivery_rate) && s.delivery_rate >= 0.99);
    rateEl.classList.toggle("warn", isNum(s.delivery_rate) && s.delivery_rate >= 0.95 && s.delivery_rate < 0.99);
    rateEl.classList.toggle("bad", isNum(s.delivery_rate) && s.delivery_rate < 0.95);

    const latency = s.latency_ms || {};
    renderLatency("c2c-ack", latency.c2c_ack);
    renderLatency("c2c-e2e", latency.c2c_e2e);
    setText("kpi-e2e-p99", fmtMs((latency.c2c_e2e || {}).p99));

    const t = s.totals || {};
    setText("total-messages", fmtInt(t.messages));
    setText("total-deliveries", fmtInt(t.deliveries));
    setText("total-receiver-acks", fmtInt(t.receiver_acks));
    setText("total-logins", fmtInt(t.logins));
    setText("total-login-failures", fmtInt(t.login_failures));
    setText("total-errors", fmtInt(t.errors));
    setText("total-bytes-in", fmtBytes(t.bytes_in), isNum(t.bytes_in) ? NF_INT.format(t.bytes_in) + " bytes" : "");
    setText("total-bytes-out", fmtBytes(t.bytes_out), isNum(t.bytes_out) ? NF_INT.format(t.bytes_out) + " bytes" : "");
    $("total-errors").classList.toggle("bad", isNum(t.errors) && t.errors > 0);
    $("total-login-failures").classList.toggle("bad", isNum(t.login_failures) && t.login_failures > 0);

    renderAppcodes(s.appcodes);
    renderGates(s.gates, s.now_ms);

    const series = s.series || {};
    const at = Array.isArray(series.at_ms) ? series.at_ms : [];
    const col = (name) => (Array.isArray(series[name]) ? series[name] : []);
    const intervalMs = 1000 * (isNum(series.interval_secs) && series.interval_secs > 0 ? series.interval_secs : 1);
    charts.throughput.update(at, [col("messages_per_sec"), col("deliveries_per_sec")], s.now_ms, intervalMs);
    charts.connections.update(at, [col("connections")], s.now_ms, intervalMs);
    charts.latency.update(at, [col("c2c_e2e_p99_ms")], s.now_ms, intervalMs);
  }

  // ---------------------------------------------------------------- polling

  let updates = 0;
  let lastOkAt = null; // Date.now() of the last successful update

  function setLive() {
    setText("status", "live");
    $("status-pill").className = "pill live";
    $("banner").hidden = true;
    document.body.classList.remove("stale");
    setText("updated", "updated " + fmtClock(lastOkAt));
  }

  function setDisconnected(reason) {
    setText("status", "disconnected — retrying");
    $("status-pill").className = "pill down";
    $("banner").hidden = false;
    document.body.classList.add("stale");
    setText("banner-reason", reason);
    setText("banner-age", lastOkAt === null ? "no figures received yet" : "the figures below are " + fmtAgo(Date.now() - lastOkAt).replace(" ago", " old"));
    setText("updated", lastOkAt === null ? "" : "last update " + fmtClock(lastOkAt));
    document.title = "longlink · disconnected";
  }

  async function poll() {
    const started = performance.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      let summary;
      try {
        const response = await fetch(SUMMARY_URL, {
          cache: "no-store",
          headers: { accept: "application/json" },
          signal: abort.signal,
        });
        if (!response.ok) throw new Error("the server answered HTTP " + response.status);
        summary = await response.json();
      } catch (err) {
        if (err && err.name === "AbortError") throw new Error("no answer within " + TIMEOUT_MS / 1000 + " s");
        if (err instanceof TypeError) throw new Error("the server is unreachable");
        if (err instanceof SyntaxError) throw new Error("the answer is not JSON");
        throw err;
      }
      render(summary);
      updates += 1;
      lastOkAt = Date.now();
      document.body.dataset.updates = String(updates);
      setLive();
    } catch (err) {
      setDisconnected((err && err.message) || String(err));
    } finally {
      clearTimeout(timer);
      setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
    }
  }

  // ---------------------------------------------------------------- theme

  const THEMES = ["auto", "dark", "light"];
  const prefersLight = window.matchMedia("(prefers-color-scheme: light)");
  // The button's choice; "auto" follows the system. The stylesheet reads only the resolved
  // `data-theme` (dark or light), so each palette is written once.
  let themeChoice = "auto";

  function applyTheme(theme) {
    themeChoice = theme;
    const resolved = theme === "auto" ? (prefersLight.matches ? "light" : "dark") : theme;
    document.documentElement.dataset.theme = resolved;
    $("theme").textContent = "Theme: " + theme;
  }

  function initTheme() {
    let theme = "auto";
    try {
      theme = localStorage.getItem("longlink-theme") || "auto";
    } catch (_) {
      // storage may be disabled; the theme then lasts as long as the page
    }
    if (!THEMES.includes(theme)) theme = "auto";
    applyTheme(theme);
    prefersLight.addEventListener("change", () => {
      if (themeChoice !== "auto") return;
      applyTheme("auto");
      for (const chart of Object.values(charts)) chart.draw();
    });
    $("theme").addEventListener("click", () => {
      const next = THEMES[(THEMES.indexOf(themeChoice) + 1) % THEMES.length];
      applyTheme(next);
      try {
        localStorage.setItem("longlink-theme", next);
      } catch (_) {
        // see above
      }
      for (const chart of Object.values(charts)) chart.draw();
    });
  }

  initTheme();
  makeCharts();
  poll();
})();
