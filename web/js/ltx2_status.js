// LTX-2 LoRA Trainer: one status line on every pack node, in an area of its own.
// ComfyUI's frontend shows a node's progress text in a widget it appends to the node
// ("$$node-text-preview") without making room for it, so on the Train node it lands on the
// loss chart, it wraps inside numbers, and it keeps the last progress line after the run. On
// the pack's nodes that widget is replaced by this line: progress while the node runs (one
// line per message, never wrapped: a long line ends in "…" and shows whole on hover), the
// node's summary once it has run.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const PREFIX = "LTX2Train";
const FRONTEND_TEXT = "$$node-text-preview";
// the option nodes only pass settings on: no status line (they stay small)
const NO_STATUS = new Set(["LTX2TrainOptions", "LTX2TrainValidation"]);
export const STATUS_HEIGHT = 40;

function graphNodes() {
  return app.graph?._nodes || app.graph?.nodes || [];
}

function nodeById(id) {
  const want = String(id ?? "").split(":").pop(); // a subgraph locator ends in the node's own id
  return graphNodes().find((n) => n.__ltx2Status && String(n.id) === want) || null;
}

function dropFrontendText(node) {
  const ws = node.widgets || [];
  const i = ws.findIndex((w) => w.name === FRONTEND_TEXT);
  if (i < 0) return;
  try { ws[i].onRemove?.(); } catch (e) { /* already detached */ }
  ws.splice(i, 1);
  node.setDirtyCanvas?.(true, true);
}

function setStatus(node, text, kind) {
  const s = node.__ltx2Status;
  if (!s) return;
  const el = s.el;
  el.replaceChildren();
  const lines = String(text ?? "").split("\n").map((l) => l.trimEnd()).filter((l) => l.length);
  for (const line of lines.slice(0, kind === "summary" ? 200 : 2)) {
    const d = document.createElement("div");
    d.style.cssText = "white-space:pre;overflow:hidden;text-overflow:ellipsis;line-height:16px";
    d.textContent = line;
    d.title = line;
    if (line.startsWith("!")) d.style.color = "#ffaa3c";
    el.append(d);
  }
  el.dataset.kind = kind;
  el.dataset.text = lines.join("\n");
  el.style.color = kind === "summary" ? "#cfe3cf" : "#ddd";
}

app.registerExtension({
  name: "ltx2_lora_trainer.status_line",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData.name || "").startsWith(PREFIX) || NO_STATUS.has(nodeData.name)) return;
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      const el = document.createElement("div");
      el.className = "ltx2-status";
      el.style.cssText = `box-sizing:border-box;width:100%;height:${STATUS_HEIGHT}px;overflow-x:hidden;overflow-y:auto;` +
        "font:12px sans-serif;color:#999;background:#1c1c20;border-radius:4px;padding:4px 6px";
      el.dataset.kind = "idle";
      el.addEventListener("wheel", (e) => e.stopPropagation(), { passive: true });
      this.__ltx2Status = { el };
      this.addDOMWidget("ltx2_status", "ltx2_status", el, {
        serialize: false, hideOnZoom: false,
        getMinHeight: () => STATUS_HEIGHT, getMaxHeight: () => STATUS_HEIGHT,
      });
      this.setSize([this.size[0], this.size[1] + STATUS_HEIGHT + 4]);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const text = message?.text?.[0] ?? message?.text;
      setStatus(this, typeof text === "string" && text ? text : "done", "summary");
      dropFrontendText(this);
      setTimeout(() => dropFrontendText(this), 0);
      return r;
    };
  },
  async setup() {
    api.addEventListener("progress_text", ({ detail }) => {
      const node = nodeById(detail?.nodeId);
      if (!node) return;
      setStatus(node, detail.text, "progress");
      // the frontend adds its own text widget in its listener (before or after this one)
      dropFrontendText(node);
      setTimeout(() => dropFrontendText(node), 0);
    });
    api.addEventListener("executing", ({ detail }) => {
      const id = detail && typeof detail === "object" ? detail.node ?? detail.display_node : detail;
      const node = id == null ? null : nodeById(id);
      if (!node) return;
      setStatus(node, "running…", "progress");
      node.__ltx2OnRunStart?.();
    });
  },
});
