// LTX-2 LoRA Trainer: live loss chart inside the Train node.
// Fed by the server's "ltx2_trainer.step" / "ltx2_trainer.marker" websocket events; after a
// page reload it replays the run so far from GET /ltx2_trainer/live/<node id>. A new run
// starts from an empty chart; the loss image the node also returns (for graphs that save or
// compose it) is not shown under the live chart, which already draws the same curve.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const NODE_ID = "LTX2TrainLoRA";
const CHART_HEIGHT = 120; // the node stays no taller than core Train LoRA (measured in tests/e2e/test_browser.py)
const IMAGE_PREVIEW = "$$canvas-image-preview";

function isTrainNode(id) {
  const want = String(id ?? "").split(":").pop();
  return chartNodes().some((n) => String(n.id) === want);
}

// the loss image goes to the node's outputs, not under the live chart: drop it from the
// "executed" message before the frontend turns it into a preview (a listener added at import
// runs before the frontend's own when the frontend binds later; hideImage covers the rest)
api.addEventListener("executed", ({ detail }) => {
  if (detail?.output?.images && isTrainNode(detail.display_node ?? detail.node)) delete detail.output.images;
});

function hideImage(node) {
  node.imgs = undefined;
  const ws = node.widgets || [];
  const i = ws.findIndex((w) => w.name === IMAGE_PREVIEW);
  if (i >= 0) { try { ws[i].onRemove?.(); } catch (e) { /* detached */ } ws.splice(i, 1); }
  try {
    const out = app.nodeOutputs?.[String(node.id)];
    if (out?.images) delete out.images;
  } catch (e) { /* the store may be read-only */ }
  node.setDirtyCanvas?.(true, true);
}
// Chart state lives on the node (node.__ltx2Chart): node ids are assigned after
// onNodeCreated runs, so events are matched to nodes by looking the id up when they arrive.
function chartNodes() {
  return (app.graph?._nodes || app.graph?.nodes || []).filter((n) => n.__ltx2Chart);
}

function emaSeries(points, beta = 0.9) {
  let s = 0, w = 0;
  return points.map((p) => { s = beta * s + (1 - beta) * p.loss; w = beta * w + (1 - beta); return s / w; });
}

function draw(state) {
  const c = state.canvas, ctx = c.getContext("2d");
  const W = c.width = Math.max(200, c.clientWidth || 320), H = c.height = Math.max(100, c.clientHeight || 120);
  ctx.fillStyle = "#18181c"; ctx.fillRect(0, 0, W, H);
  const pts = state.points.filter((p) => Number.isFinite(p.loss));
  const L = 44, R = 8, T = 16, B = 18;
  ctx.strokeStyle = "#555"; ctx.strokeRect(L, T, W - L - R, H - T - B);
  ctx.fillStyle = "#ccc"; ctx.font = "11px sans-serif";
  if (!pts.length) { ctx.fillText(state.running ? "waiting for the first step…" : "no training data yet", L + 8, H / 2); return; }
  const s0 = pts[0].step, s1 = Math.max(pts[pts.length - 1].step, s0 + 1, state.total || 0);
  let lo = Infinity, hi = -Infinity;
  for (const p of pts) { lo = Math.min(lo, p.loss); hi = Math.max(hi, p.loss); }
  if (hi - lo < 1e-12) hi = lo + 1e-6;
  const X = (s) => L + ((s - s0) / (s1 - s0)) * (W - L - R);
  const Y = (v) => H - B - ((v - lo) / (hi - lo)) * (H - T - B);
  ctx.strokeStyle = "#3c6e3c";
  for (const m of state.markers) { ctx.beginPath(); ctx.moveTo(X(m.step), T); ctx.lineTo(X(m.step), H - B); ctx.stroke(); }
  ctx.strokeStyle = "#6e8cc8"; ctx.lineWidth = 1; ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(X(p.step), Y(p.loss)) : ctx.moveTo(X(p.step), Y(p.loss)))); ctx.stroke();
  const sm = emaSeries(pts);
  ctx.strokeStyle = "#ffbe3c"; ctx.lineWidth = 2.5; ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(X(p.step), Y(sm[i])) : ctx.moveTo(X(p.step), Y(sm[i])))); ctx.stroke();
  const lrs = pts.map((p) => p.lr).filter((v) => v != null);
  if (lrs.length > 1) {
    const lmax = Math.max(...lrs) * 1.05 || 1;
    ctx.strokeStyle = "#b464b4"; ctx.lineWidth = 1; ctx.setLineDash([3, 3]); ctx.beginPath();
    pts.forEach((p, i) => { const y = H - B - (p.lr / lmax) * (H - T - B); i ? ctx.lineTo(X(p.step), y) : ctx.moveTo(X(p.step), y); });
    ctx.stroke(); ctx.setLineDash([]);
  }
  ctx.fillStyle = "#ccc";
  ctx.fillText(hi.toPrecision(4), 2, T + 8); ctx.fillText(lo.toPrecision(4), 2, H - B);
  const last = pts[pts.length - 1];
  ctx.fillStyle = "#ffbe3c";
  ctx.fillText(`step ${last.step}${state.total ? "/" + state.total : ""}  loss ${last.loss.toFixed(4)}  smoothed ${sm[sm.length - 1].toFixed(4)}`, L + 4, 11);
  state.canvas.dataset.points = String(pts.length);
}

function stateFor(nodeId) {
  const n = chartNodes().find((x) => String(x.id) === String(nodeId));
  return n?.__ltx2Chart;
}

async function replay(state) {
  try {
    const r = await api.fetchApi(`/ltx2_trainer/live/${encodeURIComponent(String(state.node.id))}`);
    if (!r.ok) return;
    const snap = await r.json();
    // the server keeps the last run per node id: a run of another LoRA (another workflow whose
    // Train node has this id) is not this node's
    const name = state.node.widgets?.find((w) => w.name === "lora_name")?.value;
    if (snap.name && name && !String(snap.name).startsWith(String(name).split("/").pop())) return;
    if (snap.points && snap.points.length >= state.points.length) {
      state.points = snap.points; state.markers = snap.markers || []; state.total = snap.total || state.total;
      state.running = !!snap.running; draw(state);
    }
  } catch (e) { /* the chart is best-effort */ }
}

app.registerExtension({
  name: "ltx2_lora_trainer.loss_chart",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_ID) return;
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      const canvas = document.createElement("canvas");
      canvas.className = "ltx2-loss-chart";
      canvas.style.width = "100%"; canvas.style.height = `${CHART_HEIGHT}px`;
      const state = { node: this, canvas, points: [], markers: [], total: 0, running: false };
      this.__ltx2Chart = state;
      // a new run (the status line sees the node start) begins from an empty chart
      this.__ltx2OnRunStart = () => {
        state.points = []; state.markers = []; state.total = 0; state.running = true; state.fresh = true; draw(state);
        hideImage(this);
      };
      this.addDOMWidget("loss_chart", "ltx2_loss_chart", canvas, {
        serialize: false, hideOnZoom: false,
        getMinHeight: () => CHART_HEIGHT, getMaxHeight: () => CHART_HEIGHT,
      });
      this.setSize([Math.max(this.size[0], 360), this.size[1] + CHART_HEIGHT + 10]);
      requestAnimationFrame(() => { draw(state); replay(state); });
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      if (this.__ltx2Chart) this.__ltx2Chart.running = false;
      hideImage(this);
      setTimeout(() => hideImage(this), 0);
      return r;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () { this.__ltx2Chart = null; return onRemoved?.apply(this, arguments); };
  },
  async setup() {
    api.addEventListener("ltx2_trainer.step", ({ detail }) => {
      const s = stateFor(detail.node); if (!s) return;
      if (s.points.length && detail.step <= s.points[s.points.length - 1].step) s.points = s.points.filter((p) => p.step < detail.step);
      s.points.push(detail); s.total = detail.total || s.total; s.running = true; draw(s);
    });
    api.addEventListener("ltx2_trainer.marker", ({ detail }) => {
      const s = stateFor(detail.node); if (!s) return; s.markers.push(detail); draw(s);
    });
    api.addEventListener("status", () => { for (const n of chartNodes()) if (!n.__ltx2Chart.points.length) replay(n.__ltx2Chart); });
  },
});
