// LTX-2 LoRA Trainer: dataset gallery inside the Bucket node.
// Bucket's UI output carries "ltx2_gallery": per training sample a thumbnail, a short clip of
// exactly what training will see (frames cropped to the bucket, with its sound), the caption
// and the flags. Tiles show thumbnail, bucket, flags and caption; a click plays the clip.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const NODE_ID = "LTX2TrainBucket";

function viewUrl(g, filename) {
  const q = new URLSearchParams({ filename, subfolder: g.subfolder || "", type: g.type || "temp" });
  return api.apiURL(`/view?${q.toString()}`);
}

function el(tag, style, text) {
  const e = document.createElement(tag);
  if (style) e.style.cssText = style;
  if (text != null) e.textContent = text;
  return e;
}

function closePlayer() {
  document.querySelectorAll(".ltx2-gallery-player").forEach((p) => {
    p.querySelectorAll("video").forEach((v) => v.pause());
    p.remove();
  });
}

function play(g, item) {
  closePlayer();
  const back = el("div", "position:fixed;inset:0;background:rgba(0,0,0,.72);z-index:10000;display:flex;" +
    "align-items:center;justify-content:center");
  back.className = "ltx2-gallery-player";
  const box = el("div", "background:#1d1d22;border:1px solid #555;border-radius:8px;padding:12px;max-width:80vw;" +
    "max-height:88vh;overflow:auto;color:#ddd;font:13px sans-serif");
  const head = el("div", "display:flex;justify-content:space-between;gap:16px;margin-bottom:8px");
  head.append(el("b", "", `${item.source}  ·  ${item.start.toFixed(2)}s + ${item.duration.toFixed(2)}s  ·  ` +
    `${item.bucket} @ ${item.fps}fps${item.audio ? "  ·  with sound" : "  ·  no sound"}`));
  const x = el("button", "background:#333;color:#eee;border:1px solid #666;border-radius:4px;cursor:pointer", "close");
  x.onclick = closePlayer;
  head.append(x);
  box.append(head);
  if (item.still && item.thumb) {
    const im = el("img", "display:block;max-width:76vw;max-height:64vh;min-width:240px;background:#000");
    im.className = "ltx2-gallery-still";
    im.src = viewUrl(g, item.thumb);
    box.append(im);
  } else if (item.clip) {
    const v = el("video", "display:block;max-width:76vw;max-height:64vh;min-width:320px;background:#000");
    v.className = "ltx2-gallery-video";
    v.controls = true; v.autoplay = true; v.loop = true; v.playsInline = true;
    v.src = viewUrl(g, item.clip);
    box.append(v);
  } else {
    box.append(el("div", "color:#f9a;margin:12px 0", `no playable clip: ${item.error || "unknown error"}`));
  }
  for (const f of item.flags || []) box.append(el("div", "color:#ffaa3c;margin-top:4px", `⚠ ${f}`));
  box.append(el("div", "margin-top:8px;white-space:pre-wrap;max-width:76vw", item.caption || "(no caption)"));
  back.append(box);
  back.addEventListener("click", (e) => { if (e.target === back) closePlayer(); });
  document.body.append(back);
}

function render(node, g) {
  const root = node.__ltx2Gallery;
  if (!root) return;
  root.replaceChildren();
  const head = el("div", "font:12px sans-serif;color:#bbb;margin:2px 4px 6px",
    `${g.total} samples` + (g.shown < g.total ? ` (first ${g.shown} shown)` : "") + " — click a tile to play it");
  root.append(head);
  const grid = el("div", "display:grid;grid-template-columns:repeat(auto-fill,minmax(118px,1fr));gap:6px");
  for (const item of g.items || []) {
    const tile = el("div", "background:#222228;border:1px solid " + ((item.flags || []).length ? "#a86a20" : "#444") +
      ";border-radius:5px;padding:4px;cursor:pointer;font:11px sans-serif;color:#ccc;overflow:hidden");
    tile.className = "ltx2-gallery-tile";
    tile.title = (item.caption || "(no caption)") + ((item.flags || []).length ? "\n⚠ " + item.flags.join("\n⚠ ") : "");
    if (item.thumb) {
      const img = el("img", "display:block;width:100%;height:72px;object-fit:contain;background:#000");
      img.src = viewUrl(g, item.thumb);
      img.loading = "lazy";
      tile.append(img);
    }
    tile.append(el("div", "color:#9bf;margin-top:2px;white-space:nowrap", `${item.bucket}${item.audio ? " ♪" : ""}`));
    for (const f of item.flags || []) tile.append(el("div", "color:#ffaa3c;white-space:nowrap;overflow:hidden;text-overflow:ellipsis", `⚠ ${f}`));
    tile.append(el("div", "display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden",
      item.caption || "(no caption)"));
    tile.addEventListener("click", (e) => { e.stopPropagation(); play(g, item); });
    grid.append(tile);
  }
  root.append(grid);
  root.dataset.tiles = String((g.items || []).length);
}

async function restore(node) {
  if (node.id == null || node.id < 0 || Number(node.__ltx2Gallery?.dataset.tiles || 0) > 0) return;
  try {
    const r = await api.fetchApi(`/ltx2_trainer/gallery/${encodeURIComponent(String(node.id))}`);
    if (!r.ok) return;
    const g = await r.json();
    if (g.items && g.items.length && Number(node.__ltx2Gallery?.dataset.tiles || 0) === 0) render(node, g);
  } catch (e) { /* the gallery is best-effort */ }
}

app.registerExtension({
  name: "ltx2_lora_trainer.dataset_gallery",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_ID) return;
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      const root = el("div", "width:100%;height:260px;overflow:auto;background:#18181c;border-radius:4px");
      root.className = "ltx2-gallery";
      root.dataset.tiles = "0";
      root.append(el("div", "font:12px sans-serif;color:#888;padding:8px", "the dataset gallery appears here after a run"));
      // keep wheel scrolling inside the gallery instead of zooming the canvas
      root.addEventListener("wheel", (e) => e.stopPropagation(), { passive: true });
      this.__ltx2Gallery = root;
      this.addDOMWidget("dataset_gallery", "ltx2_dataset_gallery", root, {
        serialize: false, hideOnZoom: false, getMinHeight: () => 260, getMaxHeight: () => 260,
      });
      this.setSize([Math.max(this.size[0], 420), this.size[1] + 270]);
      // after a page reload: the server keeps the node's last gallery (node ids come after creation)
      requestAnimationFrame(() => restore(this));
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const g = message?.ltx2_gallery?.[0];
      if (g) render(this, g);
      return r;
    };
  },
  async setup() {
    window.addEventListener("keydown", (e) => { if (e.key === "Escape") closePlayer(); });
    api.addEventListener("status", () => {
      for (const n of app.graph?._nodes || app.graph?.nodes || []) if (n.__ltx2Gallery) restore(n);
    });
  },
});
