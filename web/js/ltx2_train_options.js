// LTX-2 LoRA Trainer: the Train node and its two option nodes in the editor.
// - Picking a recipe on the Train node fills steps, rank, learning rate and mode with the
//   recipe's values (the recipes come with the node's definition), and targets / audio weight
//   on a connected LTX-2 Training Options node. A Training Options node connected for the
//   first time gets them from the Train node's recipe.
// - Old workflows (one Train node with every setting, 36 widget values) are rewritten as they
//   load: the Train node keeps its per-run values (recipe placeholders such as steps 0 become
//   the recipe's numbers), the other settings move to a new Training Options node, validation
//   to a new Validation node, their links follow.
import { app } from "../../../scripts/app.js";

const TRAIN = "LTX2TrainLoRA";
const OPTIONS = "LTX2TrainOptions";
const VALIDATION = "LTX2TrainValidation";
const FILLED = "ltx2_recipe_filled";
const DEFS = {};
let RECIPES = {};
let loading = 0;

// the old Train node's widget values, in the order the frontend saved them (required inputs,
// then optional; "seed" carries its control value after it)
const OLD_LAYOUT = ["recipe", "lora_name", "steps", "learning_rate", "rank", "mode", "targets", "seed",
  "seed_control", "resume", "alpha", "dropout", "audio_weight", "first_frame_prob", "caption_dropout", "optimizer",
  "scheduler", "warmup_steps", "grad_accum", "max_grad_norm", "checkpoint_every", "keep_checkpoints", "precision",
  "gradient_checkpointing", "vram_budget_gb", "stream_weights_as", "target_patterns", "validation_every",
  "validation_prompts", "validation_width", "validation_height", "validation_frames", "validation_steps",
  "validation_cfg", "validation_seed", "init_lora"];
const OLD_VALIDATION_SOCKETS = { validation_clip: "clip", validation_positive: "positive",
  validation_negative: "negative", validation_vae: "vae", validation_audio_vae: "audio_vae", validation_image: "image" };
const TRAIN_FALLBACK = { steps: 2000, rank: 32, learning_rate: 1e-4, mode: "text_to_audio_video",
  targets: "all attention", audio_weight: 1.0 }; // recipe "Custom": the engine's defaults
const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);

// (name, type, options) of a node definition's inputs in the frontend's order
function inputsOf(def) {
  const out = [];
  for (const sec of ["required", "optional"]) {
    const spec = def?.input?.[sec] || {};
    for (const name of def?.input_order?.[sec] || Object.keys(spec)) {
      const [t, o] = spec[name] || [];
      out.push({ name, type: t, opts: o || {} });
    }
  }
  return out;
}
const isWidget = (i) => Array.isArray(i.type) || (WIDGET_TYPES.has(i.type) && !i.opts.forceInput);
const hasControl = (i) => i.type === "INT" && (i.opts.control_after_generate || i.name === "seed" || i.name === "noise_seed");
const defaultOf = (i) => (i.opts.default !== undefined ? i.opts.default
  : Array.isArray(i.type) ? i.type[0] : i.type === "COMBO" ? (i.opts.options || [""])[0]
    : { INT: 0, FLOAT: 0, STRING: "", BOOLEAN: false }[i.type]);

// widgets_values of a node definition from named values (defaults for the rest)
function widgetValues(def, named) {
  const vals = [];
  for (const i of inputsOf(def)) {
    if (!isWidget(i)) continue;
    vals.push(named[i.name] !== undefined ? named[i.name] : defaultOf(i));
    if (hasControl(i)) vals.push("fixed");
  }
  return vals;
}
const socketsOf = (def) => inputsOf(def).filter((i) => !isWidget(i));

function widget(node, name) { return node?.widgets?.find((w) => w.name === name); }
function setValue(node, name, v) {
  const w = widget(node, name);
  if (!w || v === undefined) return;
  w.value = v;
}

function linkOf(graph, id) {
  if (id == null) return null;
  return graph.links?.get?.(id) ?? graph.links?.[id] ?? null;
}
function optionsNodeOf(train) {
  const inp = train.inputs?.find((i) => i.name === "options");
  const l = linkOf(app.graph, inp?.link);
  const n = l ? app.graph.getNodeById(l.origin_id) : null;
  return n?.type === OPTIONS ? n : null;
}

export function fillFromRecipe(train, recipe, optionsNode = optionsNodeOf(train)) {
  const r = RECIPES[recipe];
  if (!r) return false; // Custom: leave the fields as they are
  for (const k of ["steps", "rank", "learning_rate", "mode"]) setValue(train, k, r[k]);
  if (optionsNode) {
    setValue(optionsNode, "targets", r.targets);
    setValue(optionsNode, "audio_weight", r.audio_weight);
    optionsNode.properties = { ...(optionsNode.properties || {}), [FILLED]: true };
    optionsNode.setDirtyCanvas?.(true, true);
  }
  train.setDirtyCanvas?.(true, true);
  return true;
}

// ---- old workflows

function isOldTrain(n) {
  const v = n?.widgets_values;
  return n?.type === TRAIN && Array.isArray(v) && v.length === OLD_LAYOUT.length
    && ["fixed", "increment", "decrement", "randomize"].includes(v[8]);
}

// a saved link: [id, origin, origin slot, target, target slot, type] (workflow 0.4) or an
// object with those names (subgraphs, workflow 1): one view over both
const FIELDS = ["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"];
function linkView(l) {
  if (Array.isArray(l)) return l;
  return new Proxy(l, { get: (o, k) => (/^\d$/.test(String(k)) ? o[FIELDS[Number(k)]] : o[k]),
    set: (o, k, v) => { if (/^\d$/.test(String(k))) o[FIELDS[Number(k)]] = v; else o[k] = v; return true; } });
}

function migrateGraph(g) {
  if (!g || !Array.isArray(g.nodes) || !Array.isArray(g.links) || !DEFS[TRAIN] || !DEFS[OPTIONS] || !DEFS[VALIDATION]) return 0;
  let done = 0;
  const objectLinks = g.links.length > 0 && !Array.isArray(g.links[0]);
  const state = g.state || g;
  let nextNode = Math.max(state.lastNodeId || 0, g.last_node_id || 0, ...g.nodes.map((n) => Number(n.id) || 0)) + 1;
  let nextLink = Math.max(state.lastLinkId || 0, g.last_link_id || 0, ...g.links.map((l) => Number(linkView(l)[0]) || 0)) + 1;
  const linkById = new Map(g.links.map((l) => [linkView(l)[0], l]));
  for (const n of [...g.nodes]) {
    if (!isOldTrain(n)) continue;
    const old = Object.fromEntries(OLD_LAYOUT.map((k, i) => [k, n.widgets_values[i]]));
    const r = RECIPES[old.recipe] || TRAIN_FALLBACK;
    const pick = (v, k, unset) => (v === undefined || v === null || unset(v) ? r[k] ?? TRAIN_FALLBACK[k] : v);
    const rank = pick(old.rank, "rank", (v) => !v);
    const trainVals = { recipe: old.recipe, lora_name: old.lora_name, steps: pick(old.steps, "steps", (v) => !v),
      rank, learning_rate: pick(old.learning_rate, "learning_rate", (v) => !v),
      mode: pick(old.mode, "mode", (v) => v === "recipe default"), resume: old.resume, seed: old.seed };
    const optVals = { ...old, targets: pick(old.targets, "targets", (v) => v === "recipe default"),
      audio_weight: pick(old.audio_weight, "audio_weight", (v) => v < 0),
      alpha_ratio: old.alpha ? Number(old.alpha) / Number(rank) : 1.0 };
    const valVals = { every: old.validation_every || 250, prompts: old.validation_prompts ?? "",
      width: old.validation_width, height: old.validation_height, frames: old.validation_frames,
      steps: old.validation_steps, cfg: old.validation_cfg, seed: old.validation_seed };
    const [x, y] = n.pos || [0, 0];
    const w = (n.size && n.size[0]) || 420;
    // the Train node's own sockets keep their links; validation sockets move to the new node
    const trainSockets = socketsOf(DEFS[TRAIN]);
    const oldInputs = n.inputs || [];
    const byName = Object.fromEntries(oldInputs.map((i) => [i.name, i]));
    const moved = Object.entries(OLD_VALIDATION_SOCKETS).filter(([o]) => byName[o]?.link != null);
    const wantValidation = !!old.validation_every || moved.length > 0;
    // the new nodes go under the (now much shorter) Train node, in the room the old one took
    // the option node's height follows its widget count (new settings make it taller)
    const TRAIN_H = 560, OPT_H = 40 + 27 * inputsOf(DEFS[OPTIONS]).filter(isWidget).length, VAL_H = 430;
    const opt = { id: nextNode++, type: OPTIONS, pos: [x, y + TRAIN_H + 70], size: [w, OPT_H], flags: {},
      order: n.order ?? 0, mode: 0, inputs: [], outputs: [{ name: "options", type: "LTX2_TRAIN_OPTIONS", links: [], slot_index: 0 }],
      properties: { "Node name for S&R": OPTIONS, [FILLED]: true }, widgets_values: widgetValues(DEFS[OPTIONS], optVals) };
    g.nodes.push(opt);
    let val = null;
    if (wantValidation) {
      val = { id: nextNode++, type: VALIDATION, pos: [x, y + TRAIN_H + 70 + OPT_H + 70], size: [w, VAL_H], flags: {},
        order: n.order ?? 0, mode: old.validation_every ? 0 : 4, // validation was off: kept, bypassed
        inputs: socketsOf(DEFS[VALIDATION]).map((s) => ({ name: s.name, type: s.type, link: null })),
        outputs: [{ name: "validation", type: "LTX2_VALIDATION", links: [], slot_index: 0 }],
        properties: { "Node name for S&R": VALIDATION }, widgets_values: widgetValues(DEFS[VALIDATION], valVals) };
      g.nodes.push(val);
    }
    const newInputs = trainSockets.map((s) => ({ name: s.name, type: s.type, link: byName[s.name]?.link ?? null }));
    // widget inputs the Train node still has (a widget turned into a socket keeps its link)
    const trainWidgets = new Set(inputsOf(DEFS[TRAIN]).filter(isWidget).map((i) => i.name));
    for (const i of oldInputs) if (i.widget && trainWidgets.has(i.name)) newInputs.push({ ...i });
    for (const i of oldInputs) {
      if (i.link == null) continue;
      const raw = linkById.get(i.link);
      if (!raw) continue;
      const l = linkView(raw);
      if (i.name in OLD_VALIDATION_SOCKETS && val) {
        const to = val.inputs.findIndex((s) => s.name === OLD_VALIDATION_SOCKETS[i.name]);
        l[3] = val.id; l[4] = to; val.inputs[to].link = l[0];
      } else {
        const to = newInputs.findIndex((s) => s.name === i.name);
        if (to >= 0) { l[4] = to; } else { // a linked old setting: the link is dropped (the value moved)
          g.links.splice(g.links.indexOf(raw), 1);
          const src = g.nodes.find((m) => m.id === l[1]);
          const out = src?.outputs?.[l[2]];
          if (out?.links) out.links = out.links.filter((k) => k !== l[0]);
          console.warn(`[LTX-2 Trainer] old workflow: input ${i.name} of node ${n.id} now lives on a Training Options node; its link was removed`);
        }
      }
    }
    for (const [src, slotName] of [[opt, "options"], [val, "validation"]]) {
      if (!src) continue;
      const to = newInputs.findIndex((s) => s.name === slotName);
      if (to < 0) continue;
      const id = nextLink++;
      const row = [id, src.id, 0, n.id, to, src.outputs[0].type];
      g.links.push(objectLinks ? Object.fromEntries(FIELDS.map((f, k) => [f, row[k]])) : row);
      src.outputs[0].links.push(id);
      newInputs[to].link = id;
    }
    n.inputs = newInputs;
    n.widgets_values = widgetValues(DEFS[TRAIN], trainVals);
    n.size = [w, TRAIN_H];
    n.properties = { ...(n.properties || {}), ltx2_migrated_from: "single Train node (36 settings)" };
    done++;
  }
  if (done) {
    if ("last_node_id" in g || !g.state) { g.last_node_id = nextNode - 1; g.last_link_id = nextLink - 1; }
    if (g.state) { g.state.lastNodeId = nextNode - 1; g.state.lastLinkId = nextLink - 1; }
    console.info(`[LTX-2 Trainer] moved the settings of ${done} old Train node(s) to Training Options / Validation nodes`);
  }
  return done;
}

app.registerExtension({
  name: "ltx2_lora_trainer.train_options",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (![TRAIN, OPTIONS, VALIDATION].includes(nodeData.name)) return;
    DEFS[nodeData.name] = nodeData;
    if (nodeData.name !== TRAIN) return;
    RECIPES = nodeData.input?.required?.recipe?.[1]?.ltx2_recipes || {};
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      const w = widget(this, "recipe");
      if (w) {
        const cb = w.callback;
        const node = this;
        w.callback = function (value, ...rest) {
          const res = cb?.call(this, value, ...rest);
          fillFromRecipe(node, value ?? w.value);
          return res;
        };
      }
      return r;
    };
    const onConn = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function (type, slot, connected) {
      const r = onConn?.apply(this, arguments);
      if (!loading && connected && this.inputs?.[slot]?.name === "options") {
        const o = optionsNodeOf(this);
        if (o && !o.properties?.[FILLED]) fillFromRecipe(this, widget(this, "recipe")?.value, o);
      }
      return r;
    };
  },
  async beforeConfigureGraph(graphData) {
    loading++;
    try {
      migrateGraph(graphData);
      for (const sg of graphData?.definitions?.subgraphs || []) migrateGraph(sg);
    } catch (e) {
      console.error("[LTX-2 Trainer] could not update an old workflow's Train node:", e);
    }
  },
  async afterConfigureGraph() { loading = Math.max(0, loading - 1); },
});

window.__ltx2MigrateGraph = migrateGraph; // for tests and the console
