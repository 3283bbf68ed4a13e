#!/usr/bin/env bash
# GRPO on one GPU in the shape of Qwen2.5-VL-3B-Instruct, with nothing to download: writes a
# checkpoint directory that holds only the config (the 3B's dimensions; the tiny fixture's
# word-level tokenizer, chat template and image processor), and `curric bench --model` runs
# rollouts and GRPO updates on it, initialised at random on the device. Prints rollout
# tokens/s, the update's time, GFLOP/s and MFU against the GPU's peak, and the device memory in
# use.
#
#   benches/gpu/qwen25_vl_3b.sh                     # bf16 on an H100 / H200 (989 TFLOP/s)
#   DTYPE=f32 PEAK_TFLOPS=67 benches/gpu/qwen25_vl_3b.sh
#
# Knobs (environment): DEVICE (cuda:0), FEATURES (cuda; empty for a CPU smoke run), DTYPE
# (bf16), PROMPTS (4), GROUP (8), MICRO_BATCH (4), NEW_TOKENS (128), PEAK_TFLOPS (989 for bf16,
# 67 for f32), and LAYERS / HIDDEN / INTERMEDIATE / HEADS / KV_HEADS / VISION_DEPTH to shrink
# the shape for a smoke run. Gradients, AdamW's moments and master weights of 3.75B
# parameters take ~56 GiB before activations (`curric plan` estimates the rest), so this fits
# an 80 GB GPU only with small batches.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${OUT:-target/gpu-bench}/qwen25_vl_3b
mkdir -p "$out"
fixture=tests/fixtures/qwen_vl/tiny_qwen2_5_vl
cp "$fixture"/tokenizer.json "$fixture"/tokenizer_config.json "$fixture"/chat_template.jinja \
   "$fixture"/preprocessor_config.json "$fixture"/generation_config.json "$out"/
rm -f "$out"/model.safetensors
python3 - "$fixture/config.json" "$out/config.json" <<'PY'
import json, os, sys
# The token ids stay the fixture tokenizer's; every dimension is Qwen2.5-VL-3B-Instruct's.
c = json.load(open(sys.argv[1]))
env = lambda k, d: int(os.environ.get(k, d))
text = c.pop("text_config", {})
c.update({k: v for k, v in text.items() if k not in c})
c.update({
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
    "vocab_size": 151936, "hidden_size": env("HIDDEN", 2048),
    "intermediate_size": env("INTERMEDIATE", 11008), "num_hidden_layers": env("LAYERS", 36),
    "num_attention_heads": env("HEADS", 16), "num_key_value_heads": env("KV_HEADS", 2),
    "max_position_embeddings": 128000, "rope_theta": 1000000.0, "tie_word_embeddings": True,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
})
head_dim = c["hidden_size"] // c["num_attention_heads"]
if head_dim != 128:  # a shrunk shape: sections that still sum to head_dim / 2
    t = head_dim // 2 - 2 * (3 * head_dim // 16)
    c["rope_scaling"]["mrope_section"] = [t, 3 * head_dim // 16, 3 * head_dim // 16]
c["vision_config"] = {
    "depth": env("VISION_DEPTH", 32), "hidden_size": 1280, "intermediate_size": 3420,
    "num_heads": 16, "out_hidden_size": c["hidden_size"], "patch_size": 14,
    "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu",
}
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY

features=${FEATURES-cuda}
dtype=${DTYPE:-bf16}
if [ "$dtype" = bf16 ]; then peak=${PEAK_TFLOPS:-989}; else peak=${PEAK_TFLOPS:-67}; fi
cargo build --release ${features:+--features "$features"}
./target/release/curric bench --model "$out" --device "${DEVICE:-cuda:0}" --dtype "$dtype" \
  --prompts "${PROMPTS:-4}" --group "${GROUP:-8}" --micro-batch "${MICRO_BATCH:-4}" \
  --new-tokens "${NEW_TOKENS:-128}" --peak-tflops "$peak"
