"""The planner's step-time model (trainer_core.ltx2.memory): block FLOPs against torch's
own FlopCounterMode on the tiny model, and the predicted step's shape (streaming over a
slow link costs time, a faster GPU predicts a shorter step, the summary shows it)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer_core.ltx2 import build_tree, make_predict, plan_memory
from trainer_core.ltx2.forward import CONNECTOR_MIN_TOKENS
from trainer_core.ltx2.memory import StepSpeed, block_flops, module_bytes, predict_step_s

from tests.core.test_ltx2_forward import step_inputs, tiny_config


def test_block_flops_match_flop_counter():
    c = tiny_config("2.0")
    root = build_tree(c, seed=1)
    inp = step_inputs(c, "text_to_audio_video", B=1, F=3, H=4, W=4, T=9)
    nv, na = inp.video.tokens.shape[1], inp.audio.tokens.shape[1]
    counted = []
    for blocks in (list(root.transformer_blocks), []):  # with and without the blocks
        saved = root.transformer_blocks
        root.transformer_blocks = torch.nn.ModuleList(blocks)
        fc = FlopCounterMode(display=False)
        with torch.no_grad(), fc:
            make_predict(checkpointing=False)(root, inp)
        counted.append(fc.get_total_flops())
        root.transformer_blocks = saved
    measured = counted[0] - counted[1]
    # torch's counter has no rule for the CPU attention kernel: compare the linear layers
    model = sum(block_flops(b, nv, na, CONNECTOR_MIN_TOKENS, attention=False) for b in root.transformer_blocks)
    assert abs(model - measured) / measured < 0.02, (model, measured)
    with_attn = sum(block_flops(b, nv, na, CONNECTOR_MIN_TOKENS) for b in root.transformer_blocks)
    # the attention products: 4·Tq·Tk·inner for each of the six attentions of a block
    d_v, d_a = c.inner_dim, c.audio_inner_dim
    att = 4 * (nv * nv * d_v + nv * CONNECTOR_MIN_TOKENS * d_v + na * na * d_a + na * CONNECTOR_MIN_TOKENS * d_a
               + 2 * nv * na * root.transformer_blocks[0].audio_to_video_attn.to_q.out_features)
    assert abs(with_attn - model - len(root.transformer_blocks) * att) < 1.0


def test_predicted_step_responds_to_link_and_compute():
    c = tiny_config("2.0")
    root = build_tree(c, seed=1)
    blocks = root.transformer_blocks
    sizes = [module_bytes(b) for b in blocks]
    nv, na = 6144, 126
    resident = plan_memory(blocks, 0, nv, na, budget_gib=None)
    streamed = plan_memory(blocks, 0, nv, na, budget_gib=None)
    streamed.modes, streamed.streamed = ["full"] * len(blocks), list(range(len(blocks)))
    fast, slow_link = StepSpeed(800.0, 50.0), StepSpeed(800.0, 1e-4)
    t_res = predict_step_s(resident, blocks, nv, na, fast)
    t_str = predict_step_s(streamed, blocks, nv, na, fast, block_bytes=sizes)
    t_slow = predict_step_s(streamed, blocks, nv, na, slow_link, block_bytes=sizes)
    assert t_str > t_res  # recomputation costs a forward
    # over a near-dead link the weights' copies (twice: forward and recompute) bound the step
    assert abs(t_slow - 2 * sum(sizes) / 1e5) / t_slow < 0.01
    t_4090 = predict_step_s(resident, blocks, nv, na, StepSpeed(165.0, 25.0))
    assert t_4090 > t_res
    assert "predicted step" in resident.summary()
