"""The whole step as one CUDA graph (trainer_core.step_graph), on the CPU: the same path —
signatures, the captured inputs, warm-up, replays of the step on copied inputs — with nothing
recorded. It must train the LoRA the plain loop trains, to rounding (on the CPU its AdamW is the
plain loop's; on a GPU it is the fused, capturable kernel), write checkpoints either loop resumes,
and step eagerly, saying why, wherever one graph cannot serve the run. The capture itself
needs a GPU: bench/bench_step_graph.py measured it against the plain step there."""
from __future__ import annotations

import pytest
import torch

from tests.core.test_engine import ToyRoot, ToySource, cfg, lora_tensors, toy_predict
from trainer_core import engine as en
from trainer_core import step_graph as sgm


def graph_predict(root, inputs, block_graphs=None):
    return toy_predict(root, inputs)


graph_predict.whole_step_graphs = True


def _train(tmp_path, name, graphed, source=None, callbacks=None, resume=None, **kw):
    tr = en.Trainer(ToyRoot(), graph_predict, source or ToySource(n=3), cfg(**kw), tmp_path / name,
                    callbacks=callbacks)
    tr.step_graph = "cpu" if graphed else False
    res = tr.train(resume_from=resume)
    return tr, res


def _same(a, b):
    """The same LoRA and the same numbers at every step, to rounding (on the CPU the graph
    loop's AdamW is the plain loop's; the clipping norm is summed over the tensors where the
    plain loop sums it over their one buffer)."""
    ta, tb = lora_tensors(a), lora_tensors(b)
    assert sorted(ta) == sorted(tb)
    for k in tb:
        torch.testing.assert_close(ta[k], tb[k], rtol=1e-5, atol=1e-7)
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history):
        assert set(ha) == set(hb)
        for key in set(hb) & {"loss", "loss_video", "loss_audio", "grad_norm", "lora_max", "lr"}:
            assert ha[key] == pytest.approx(hb[key], rel=1e-5), key


@pytest.mark.parametrize("mode,clip", [("text_to_audio_video", 0.05), ("video_only", 0.0)])
def test_the_graph_step_trains_the_plain_lora(tmp_path, mode, clip):
    """Warm-up steps, one capture, then replays on copied inputs: the LoRA and every step's
    numbers are the plain loop's, over a warm-up and cosine schedule (the learning rate is
    a value the step reads, not one frozen into it) and with clipping on or off."""
    kw = dict(steps=9, mode=mode, scheduler="cosine", warmup_steps=2, max_grad_norm=clip, weight_decay=0.1)
    tr, graphed = _train(tmp_path, "g", True, **kw)
    _, plain = _train(tmp_path, "p", False, **kw)
    _same(graphed, plain)
    rep = tr.step_graph_state.report()
    assert rep == {"captures": 1, "replays": 9 - sgm.WARMUP, "eager_steps": sgm.WARMUP, "off": None,
                   "dropped_for_other_shapes": 0}
    assert len({h["lr"] for h in plain.history}) > 3  # the schedule moved
    if clip:
        assert any(h["grad_norm"] > clip for h in plain.history)  # clipping did something
    assert all(p.grad is None for p in graphed.lora.parameters())


def test_a_second_bucket_turns_the_graph_off_and_says_why(tmp_path):
    """Inputs of another shape cannot go through the captured buffers. Two buckets taking
    turns would free and capture the graph every few steps: the run turns it off, steps
    eagerly from there, says so, and still trains the plain loop's LoRA."""
    src = ToySource(n=4)
    for it in src.items[2:]:
        it.video = torch.randn(128, 2, 4, 3, generator=torch.Generator().manual_seed(5))
        it.bucket = "96x128x9"
    events = []
    cb = en.Callbacks(on_event=lambda name, p: events.append((name, p)))
    tr, graphed = _train(tmp_path, "g", True, source=src, callbacks=cb, steps=16)
    _, plain = _train(tmp_path, "p", False, source=src, steps=16)
    _same(graphed, plain)
    rep = tr.step_graph_state.report()
    assert rep["off"] and "change shape too often" in rep["off"] and rep["dropped_for_other_shapes"] == 3
    msgs = [p["message"] for n, p in events if n == "notice"]
    assert any("whole-step CUDA graph off" in m for m in msgs)
    assert any("whole-step CUDA graph off" in m for m in graphed.notes)


def test_an_epochs_smaller_last_batch_steps_eagerly_and_the_graph_comes_back(tmp_path):
    """21 clips in batches of 2: each epoch ends with one clip alone. That step frees the graph
    and runs eagerly, the next full batch captures it again at once (its shape has run
    before), and the graph stays on; the LoRA is the plain loop's."""
    src = ToySource(n=21)
    tr = en.Trainer(ToyRoot(), graph_predict, src, cfg(steps=24), tmp_path / "g", batch_size=2)
    tr.step_graph = "cpu"
    graphed = tr.train()
    plain = en.Trainer(ToyRoot(), graph_predict, ToySource(n=21), cfg(steps=24), tmp_path / "p", batch_size=2).train()
    _same(graphed, plain)
    rep = tr.step_graph_state.report()
    # steps 1–2 eager, 3 captured; steps 11 and 22 (one clip) eager, 12 and 23 captured again
    assert rep == {"captures": 3, "replays": 24 - 4, "eager_steps": 4, "off": None, "dropped_for_other_shapes": 2}


def test_moved_weights_capture_again(tmp_path):
    """A weight whose storage moved after the capture (ComfyUI reloading the model, state
    offloaded and back) would be read at its old address: the next step warms up and captures
    again, and the run trains what the plain loop trains."""
    moved = []

    def on_step(rec):
        if rec["step"] == 4:  # after the capture (steps 1–2 warm up, 3 is captured)
            root = tr_holder[0].root
            root.text.weight.data = root.text.weight.data.clone()
            moved.append(rec["step"])

    tr_holder = []
    tr = en.Trainer(ToyRoot(), graph_predict, ToySource(n=3), cfg(steps=10), tmp_path / "g",
                    callbacks=en.Callbacks(on_step=on_step))
    tr.step_graph = "cpu"
    tr_holder.append(tr)
    graphed = tr.train()
    _, plain = _train(tmp_path, "p", False, steps=10)
    _same(graphed, plain)
    assert moved == [4]
    rep = tr.step_graph_state.report()
    assert rep["captures"] == 2 and rep["eager_steps"] == sgm.WARMUP + 1 and rep["off"] is None


def test_previews_drop_the_graph_and_the_run_captures_again(tmp_path):
    """Sampling previews needs the graph's memory: it is freed before each validation (with the
    optimizer's state offloaded meanwhile, as the Train node does), captured again after."""
    seen = []

    def validate(step, opt):
        with en.optimizer_offloaded(opt):
            seen.append(step)

    cb = en.Callbacks(on_validate=validate, validate_every=5)
    tr, graphed = _train(tmp_path, "g", True, callbacks=cb, steps=12)
    _, plain = _train(tmp_path, "p", False, steps=12)
    _same(graphed, plain)
    assert seen == [5, 10]
    # steps 3, 7 and 12 (after each preview one eager step, then the capture)
    assert tr.step_graph_state.report()["captures"] == 3


def test_checkpoints_resume_across_the_two_loops(tmp_path):
    """The graph's optimizer (fused AdamW, a learning rate that is a tensor on a GPU) writes
    PyTorch AdamW's checkpoint: the plain loop resumes it, and the graph loop resumes the plain
    loop's; both end where an unbroken run ends."""
    kw = dict(steps=8, checkpoint_every=4, keep_checkpoints=5, scheduler="linear")
    _, full = _train(tmp_path, "full", False, **kw)
    _train(tmp_path, "g", True, **kw)
    ck_graph = tmp_path / "g" / "checkpoints" / "step_000004.safetensors"
    ck_plain = tmp_path / "full" / "checkpoints" / "step_000004.safetensors"
    t_g, m_g = en.read_checkpoint(ck_graph)
    t_p, m_p = en.read_checkpoint(ck_plain)
    assert sorted(t_g) == sorted(t_p) and m_g["optimizer"] == m_p["optimizer"]  # (no tensor learning rate in it)
    for k in t_p:
        torch.testing.assert_close(t_g[k], t_p[k], rtol=1e-5, atol=1e-7)
    _, plain_from_graph = _train(tmp_path, "r1", False, resume=ck_graph, **kw)
    _, graph_from_plain = _train(tmp_path, "r2", True, resume=ck_plain, **kw)
    for res in (plain_from_graph, graph_from_plain):
        a, b = lora_tensors(res), lora_tensors(full)
        for k in b:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("change,why", [
    (dict(grad_accum=2), "accumulates gradients"),
    (dict(optimizer="adamw8bit"), "adamw8bit"),
    (dict(dropout=0.1), "dropout"),
])
def test_runs_one_graph_cannot_serve_say_why(tmp_path, change, why):
    tr = en.Trainer(ToyRoot(), graph_predict, ToySource(n=3), cfg(steps=2, **change), tmp_path)
    assert any(why in b for b in tr.step_graph_blockers())
    tr = en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(steps=2), tmp_path)
    assert tr.step_graph_blockers() == ["it runs on the CPU", "its forward cannot leave out its per-block graphs"]


def test_asked_for_on_the_cpu_the_run_steps_plainly_and_says_so(tmp_path):
    events = []
    tr = en.Trainer(ToyRoot(), graph_predict, ToySource(n=3), cfg(steps=3), tmp_path,
                    callbacks=en.Callbacks(on_event=lambda n, p: events.append((n, p))))
    tr.step_graph = True
    res = tr.train()
    assert not hasattr(tr, "step_graph_state")
    assert any("whole-step CUDA graph is off for this run: it runs on the CPU" in n for n in res.notes)
    assert any(n == "notice" and "it runs on the CPU" in p["message"] for n, p in events)


def test_the_setting_comes_from_the_environment(monkeypatch):
    from trainer_core import run

    monkeypatch.delenv("LTX2_TRAINER_STEP_GRAPH", raising=False)
    assert run.step_graph_wanted() is False
    for v, want in (("1", True), ("on", True), ("0", False), ("off", False)):
        monkeypatch.setenv("LTX2_TRAINER_STEP_GRAPH", v)
        assert run.step_graph_wanted() is want


def test_signatures_and_captured_inputs():
    """Two steps' inputs of one bucket share a signature and other shapes do not; the captured
    inputs are fresh contiguous copies (an expanded tensor too) that keep shared tensors shared."""
    from dataclasses import dataclass

    @dataclass
    class Inner:
        x: torch.Tensor
        y: torch.Tensor
        grid: tuple

    base = torch.randn(3)
    a = {"m": Inner(base.expand(4, 3), base, (1, 2)), "fps": 24.0}
    b = {"m": Inner(torch.randn(4, 3), torch.randn(3), (1, 2)), "fps": 24.0}
    c = {"m": Inner(torch.randn(4, 3), torch.randn(3), (1, 3)), "fps": 24.0}
    d = {"m": Inner(torch.randn(5, 3), torch.randn(3), (1, 2)), "fps": 24.0}
    sig = sgm.flatten_inputs(a)[1]
    assert sgm.flatten_inputs(b)[1] == sig and sgm.flatten_inputs(c)[1] != sig and sgm.flatten_inputs(d)[1] != sig
    shared = Inner(base, base, (1,))
    s = sgm._static_copy({"m": shared, "n": [base]})
    assert s["m"].x is s["m"].y is s["n"][0] and s["m"].x is not base and torch.equal(s["m"].x, base)
    st = sgm._static_copy(a)
    assert st["m"].x.is_contiguous() and st["m"].x.stride() == (3, 1)
    st["m"].x.copy_(b["m"].x)  # what a step does to the captured inputs
    assert torch.equal(st["m"].x, b["m"].x)


def test_a_tensor_learning_rate_is_filled_where_it_lives():
    """A captured step reads the learning rate from its tensor's memory: setting it must write
    there, not put a new number in the group (which the graph would never see)."""
    p = torch.nn.Parameter(torch.zeros(3))
    lr = torch.tensor(1e-3)
    opt = torch.optim.AdamW([p], lr=lr)
    sgm.set_lr(opt, 5e-4)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(5e-4)
    plain = torch.optim.AdamW([p], lr=1e-3)
    sgm.set_lr(plain, 2e-4)
    assert plain.param_groups[0]["lr"] == 2e-4


@pytest.mark.parametrize("mode,conditions", [("text_to_audio_video", ""), ("v2v_ic_lora", "reference + first_frame@0.5"),
                                             ("video_extension", "prefix:1@0.5 + suffix:1@0.5")])
def test_the_ltx2_forward_replays_one_signature_through_a_run(tmp_path, mode, conditions):
    """On the tiny LTX-2 tree with the engine's own forward (make_predict, which takes
    ``block_graphs``): every step of a one-bucket run has one signature — noise, timesteps,
    caption dropout, conditions drawn with a probability and references all come in as tensors
    of fixed shapes — so the run captures once and replays to its end, and trains the LoRA the
    plain loop trains."""
    from tests.core.test_mode_training import PairedSource, _cfg, _root
    from trainer_core.ltx2 import make_predict

    predict = make_predict(checkpointing=False)
    runs = {}
    for name, graphed in (("g", True), ("p", False)):
        tr = en.Trainer(_root(), predict, PairedSource(n=2), _cfg(mode, conditions, steps=7, learning_rate=1e-2,
                                                                  max_grad_norm=1.0), tmp_path / name)
        tr.step_graph = "cpu" if graphed else False
        runs[name] = (tr, tr.train())
    _same(runs["g"][1], runs["p"][1])
    assert runs["g"][0].step_graph_state.report() == {"captures": 1, "replays": 7 - sgm.WARMUP,
                                                       "eager_steps": sgm.WARMUP, "off": None,
                                                       "dropped_for_other_shapes": 0}


def test_captions_of_any_length_share_the_graph(tmp_path):
    """Captions of 5, 7 and 3 tokens and the empty caption of caption dropout: through the
    connectors (eagerly, before the step) they have one length, so one graph serves them all,
    and the LoRA is the plain loop's (which runs the connectors inside the forward)."""
    from tests.core.test_mode_training import WIDTH, PairedSource, _cfg, _root
    from trainer_core.ltx2 import make_predict

    def source():
        src = PairedSource(n=3)
        g = torch.Generator().manual_seed(9)
        for it, n in zip(src.items, (5, 7, 3)):
            it.text = {"context": torch.randn(n, WIDTH, generator=g)}
        src.empty = {"context": torch.zeros(2, WIDTH)}
        return src

    predict = make_predict(checkpointing=False)
    runs = {}
    for name, graphed in (("g", True), ("p", False)):
        tr = en.Trainer(_root(), predict, source(), _cfg("text_to_audio_video", "", steps=8, learning_rate=1e-2,
                                                         caption_dropout=0.4), tmp_path / name)
        tr.step_graph = "cpu" if graphed else False
        runs[name] = (tr, tr.train())
    _same(runs["g"][1], runs["p"][1])
    assert runs["g"][0].step_graph_state.report()["off"] is None
    assert runs["g"][0].step_graph_state.report()["captures"] == 1


def test_host_numbers_in_the_inputs_are_part_of_the_signature():
    """Caption lengths travel as a tensor in host memory that a GPU step reads as numbers: a
    capture would keep the first step's, so other values need another signature (on the CPU,
    where nothing is captured, values never count)."""
    x = torch.zeros(2, 4, device="meta")  # (stands for the step's tensors on the GPU)
    a = {"context_lengths": torch.tensor([5, 3]), "x": x}
    b = {"context_lengths": torch.tensor([5, 3]), "x": torch.ones(2, 4, device="meta")}
    c = {"context_lengths": torch.tensor([4, 3]), "x": x}
    sig = sgm.flatten_inputs(a, "cuda")[1]
    assert sgm.flatten_inputs(b, "cuda")[1] == sig and sgm.flatten_inputs(c, "cuda")[1] != sig
    assert sgm.flatten_inputs(a)[1] == sgm.flatten_inputs(c)[1]


def test_a_lora_on_the_text_connectors_keeps_the_plain_step(tmp_path):
    """A LoRA that trains the connectors needs them inside the step, where each caption length
    is its own shape: the run says so and steps as the plain loop does."""
    from tests.core.test_mode_training import PairedSource, _cfg, _root
    from trainer_core.ltx2 import make_predict

    cfg_ = _cfg("text_to_audio_video", "", steps=2, target_patterns=r"video_embeddings_connector\..*attn1\.to_q")
    tr = en.Trainer(_root(), make_predict(checkpointing=False), PairedSource(n=1), cfg_, tmp_path)
    tr.step_graph = "cpu"
    res = tr.train()
    assert not hasattr(tr, "step_graph_state")
    assert any("trains the text connectors" in n for n in res.notes)
