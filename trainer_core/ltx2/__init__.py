"""LTX-2 audio-video transformer for training: config, plain-torch module tree, and the
engine's own out-of-place, checkpoint-safe forward (which never imports ComfyUI)."""
from .config import ConfigError, LTX2Config, read_checkpoint_config, variant_of
from .forward import (InferenceWeightsError, ensure_trainable_weights, find_inference_tensors, forward_av,
                      make_predict, prepare_text, quantized_weights_for_inference)
from .memory import BlockStreamer, MemoryPlan, plan_memory
from .tree import LTX2AVTransformer, build_tree, init_weights, load_tree_from_checkpoint

__all__ = ["LTX2Config", "ConfigError", "read_checkpoint_config", "variant_of", "make_predict", "forward_av",
           "prepare_text", "ensure_trainable_weights", "find_inference_tensors", "InferenceWeightsError",
           "LTX2AVTransformer", "build_tree", "init_weights", "load_tree_from_checkpoint", "BlockStreamer",
           "MemoryPlan", "plan_memory", "quantized_weights_for_inference"]
