"""Writes the side-by-side benchmark's checkpoint and prompts into DIR (default ./work):

- ckpt/: a random-init Qwen2 (hidden 256, 4 layers, 4 heads, 2 KV heads, MLP 768, tied
  embeddings, 3.18 M parameters) saved by transformers (config.json, model.safetensors) with a
  word-level tokenizer.json: the special tokens, "what", "is", "plus", "?" and the numbers
  0..100. TRL and curric load the very same files.
- prompts.jsonl: 512 "what is A plus B" problems (A, B in 0..50) with their sums, in the JSONL
  form curric reads; TRL reads the same rows.

Usage: python make_checkpoint.py [DIR]
"""
import json
import os
import random
import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIALS = ["[PAD]", "[UNK]", "[EOS]"]
WORDS = ["what", "is", "plus", "?"] + [str(i) for i in range(101)]


def main(out):
    ckpt = os.path.join(out, "ckpt")
    os.makedirs(ckpt, exist_ok=True)
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   eos_token="[EOS]")
    fast.save_pretrained(ckpt)

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(vocab), hidden_size=256, intermediate_size=768,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=None, eos_token_id=vocab["[EOS]"], pad_token_id=vocab["[PAD]"],
                      torch_dtype="float32")
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(ckpt, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())

    rng = random.Random(0)
    with open(os.path.join(out, "prompts.jsonl"), "w") as f:
        for i in range(512):
            a, b = rng.randrange(51), rng.randrange(51)
            f.write(json.dumps({"id": f"sum/{i:04d}", "problem": f"what is {a} plus {b}",
                                "answer": str(a + b), "capability": "text_reasoning"}) + "\n")
    print(f"wrote {ckpt} ({params / 1e6:.2f} M parameters) and {out}/prompts.jsonl")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "work")
