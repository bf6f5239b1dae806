// LTX-2 LoRA Trainer: Load Clips shows the picked folder before a run: how many videos,
// pictures and captions it holds, and the first frames (GET /ltx2_trainer/folder_preview,
// which resolves the folder exactly as the node does).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const NODE_ID = "LTX2TrainLoadClips";
const HEIGHT = 170;

function value(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

async function refresh(node) {
  const box = node.__ltx2FolderPreview;
  if (!box) return;
  const folder = value(node, "folder") ?? "";
  const path = value(node, "path") ?? "";
  const recursive = value(node, "recursive") ?? true;
  const key = JSON.stringify([folder, path, recursive]);
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const q = new URLSearchParams({ folder: String(folder), path: String(path), recursive: recursive ? "1" : "0" });
  let res;
  try {
    const r = await api.fetchApi(`/ltx2_trainer/folder_preview?${q.toString()}`);
    res = await r.json();
  } catch (e) {
    res = { ok: false, error: "no preview (server not reachable)" };
  }
  if (box.dataset.key !== key) return; // a newer pick is on its way
  render(box, res);
}

function render(box, res) {
  box.replaceChildren();
  const head = document.createElement("div");
  head.className = "ltx2-folder-counts";
  head.style.cssText = "font:13px sans-serif;margin:2px 4px 4px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis";
  if (!res.ok) {
    head.style.color = "#f9a";
    head.textContent = res.error || "no preview";
    head.title = head.textContent;
    head.style.whiteSpace = "normal";
    box.append(head);
    box.dataset.total = "0";
    return;
  }
  const parts = [`${res.videos} video${res.videos === 1 ? "" : "s"}`, `${res.images} picture${res.images === 1 ? "" : "s"}`,
    `${res.captions} caption${res.captions === 1 ? "" : "s"}${res.caption_table ? " + dataset.json" : ""}`];
  head.textContent = res.total ? parts.join(" · ") + (res.shown < res.total ? `  (first ${res.shown} shown)` : "")
    : "no videos or pictures in this folder yet";
  head.style.color = res.total ? "#cfe3cf" : "#ffaa3c";
  box.append(head);
  if (res.sheet) {
    const img = document.createElement("img");
    img.className = "ltx2-folder-sheet";
    img.src = res.sheet;
    img.style.cssText = `display:block;max-width:100%;max-height:${HEIGHT - 28}px;object-fit:contain;margin:0 auto`;
    box.append(img);
  }
  box.dataset.total = String(res.total);
}

app.registerExtension({
  name: "ltx2_lora_trainer.folder_preview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_ID) return;
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      const box = document.createElement("div");
      box.className = "ltx2-folder-preview";
      box.style.cssText = `box-sizing:border-box;width:100%;height:${HEIGHT}px;overflow:hidden;background:#18181c;border-radius:4px`;
      box.dataset.total = "0";
      this.__ltx2FolderPreview = box;
      this.addDOMWidget("folder_preview", "ltx2_folder_preview", box, {
        serialize: false, hideOnZoom: false, getMinHeight: () => HEIGHT, getMaxHeight: () => HEIGHT,
      });
      this.setSize([Math.max(this.size[0], 400), this.size[1] + HEIGHT + 6]);
      for (const name of ["folder", "path", "recursive"]) {
        const w = this.widgets?.find((x) => x.name === name);
        if (!w) continue;
        const cb = w.callback;
        let t = null;
        w.callback = (...args) => {
          const res = cb?.apply(w, args);
          clearTimeout(t);
          t = setTimeout(() => refresh(this), name === "path" ? 500 : 0);
          return res;
        };
      }
      requestAnimationFrame(() => refresh(this));
      return r;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      requestAnimationFrame(() => refresh(this)); // a loaded workflow: its saved folder
      return r;
    };
  },
});
