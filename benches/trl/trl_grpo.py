"""TRL's GRPOTrainer on the side-by-side checkpoint: G = 8 × 16 prompts per step, temperature
1, beta 0.04 (k3, TRL's only estimator), lr 1e-4, on CPU with the given threads. Prints one JSON
line: the seconds of every step.

Usage: python trl_grpo.py WORK NEW_TOKENS STEPS THREADS
"""
import json
import os
import re
import sys
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer


def accuracy(completions, answer, **_):
    """1 when the last number of the completion is the answer (curric's accuracy(last_number))."""
    out = []
    for c, a in zip(completions, answer):
        nums = re.findall(r"-?\d+", c)
        out.append(1.0 if nums and nums[-1] == a else 0.0)
    return out


class StepTimes(TrainerCallback):
    def __init__(self):
        self.times, self.t0 = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t0)


def main(work, new_tokens, steps, threads):
    torch.set_num_threads(threads)
    ckpt = os.path.join(work, "ckpt")
    rows = [json.loads(l) for l in open(os.path.join(work, "prompts.jsonl"))]
    data = Dataset.from_list([{"prompt": r["problem"], "answer": r["answer"]} for r in rows])
    cfg = GRPOConfig(
        output_dir=os.path.join(work, "trl_out"),
        num_generations=8,
        per_device_train_batch_size=128,  # completions: 16 prompts × G 8
        gradient_accumulation_steps=1,
        max_completion_length=new_tokens,
        temperature=1.0,
        beta=0.04,
        learning_rate=1e-4,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
    )
    timer = StepTimes()
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32),
        processing_class=AutoTokenizer.from_pretrained(ckpt),
        reward_funcs=accuracy,
        args=cfg,
        train_dataset=data,
        callbacks=[timer],
    )
    trainer.train()
    print(json.dumps({"engine": "trl", "new_tokens": new_tokens, "step_s": timer.times}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
