"""Time per training step of MIRA's SFT and GRPO wrappers against plain TRL, same tiny model, same data.

Both sides get the same Qwen2.5-VL (tiny, random, from :mod:`mira.testing`), the same MIRA-Editing rows, the same
TRL settings and (for GRPO) the same reward functions, with a zero-latency editor and judge so that the figure is
the trainers' own cost. Runs alternate (plain, MIRA, MIRA, plain, plain, MIRA, ...) so that a busy machine and
warm caches favour neither side; the median step time of each side is reported, after warm-up steps, and the ratio
MIRA / plain (target <= 1.05).
The one-off setup (dataset checks, loading) is reported apart.

    python benchmarks/train_overhead.py [--steps 12] [--repeats 6] [--warmup 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from PIL import Image  # noqa: E402

from mira.editors.base import Editor  # noqa: E402
from mira.judges.base import Judge, JudgeScores  # noqa: E402
from mira.protocol import PROTOCOL_VERSION, Observation, assistant_message, build_messages  # noqa: E402

COLOURS = ["red", "blue", "green", "black", "white", "yellow", "brown", "orange"]


class InstantEditor(Editor):
    name = "instant"

    def __init__(self):
        self.result = Image.new("RGB", (56, 56), (200, 30, 30))

    def edit(self, image, instruction, *, seed=None):
        return self.result


class InstantJudge(Judge):
    name = "instant"

    def score(self, source, edited, instruction):
        return JudgeScores.from_sc_pq(7.0, 8.0)


def write_data(root: Path) -> tuple[Path, Path]:
    from datasets import Dataset

    sft, grpo = [], []
    for i, colour in enumerate(COLOURS):
        obs = Observation(f"make the cup {colour}", (), Image.new("RGB", (56, 56), (240, 240, 240)),
                          Image.new("RGB", (56, 56), (240, 240, 240)))
        meta = {"trajectory_id": f"t{i}", "step": 1, "protocol_version": PROTOCOL_VERSION}
        sft.append({"messages": build_messages(obs) + [assistant_message(f"make the cup {colour}", "It is white.")],
                    "images": obs.images, **meta})
        grpo.append({"prompt": build_messages(obs), "images": obs.images, "instruction": obs.instruction,
                     "history": [], **meta})
    Dataset.from_list(sft).save_to_disk(root / "sft")
    Dataset.from_list(grpo).save_to_disk(root / "grpo")
    return root / "sft", root / "grpo"


class StepTimer:
    """A TrainerCallback recording the wall time and the CPU time of every optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.wall, self.cpu, self._start = [], [], (0.0, 0.0)

            def on_step_begin(self, args, state, control, **kwargs):
                self._start = (time.perf_counter(), time.process_time())

            def on_step_end(self, args, state, control, **kwargs):
                self.wall.append(time.perf_counter() - self._start[0])
                self.cpu.append(time.process_time() - self._start[1])

        return _Timer()


def common(out: Path, steps: int) -> dict:
    return dict(output_dir=str(out), max_steps=steps, use_cpu=True, bf16=False, activation_checkpointing=False,
                report_to="none", disable_tqdm=True, logging_strategy="no", save_strategy="no", seed=0,
                dataloader_num_workers=0)


def sft_pair(model: Path, data: Path, out: Path, steps: int):
    from datasets import load_from_disk
    from transformers import AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from mira.train.sft import MiraSFTConfig, build_sft_trainer

    settings = dict(per_device_train_batch_size=2, learning_rate=1e-3, assistant_only_loss=True, max_length=None)

    def plain(timer):
        return SFTTrainer(model=str(model), args=SFTConfig(**common(out / "plain", steps), **settings),
                          train_dataset=load_from_disk(str(data)), processing_class=AutoProcessor.from_pretrained(model),
                          callbacks=[timer])

    def mira(timer):
        config = MiraSFTConfig(model_name_or_path=str(model), dataset_name=str(data), **common(out / "mira", steps),
                               **settings)
        return build_sft_trainer(config, callbacks=[timer])

    return plain, mira


def grpo_pair(model: Path, data: Path, out: Path, steps: int):
    from datasets import load_from_disk
    from transformers import AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from mira.train.grpo import MiraGRPOConfig, build_grpo_trainer
    from mira.train.rewards import EditEnvironment, EditReward, format_reward

    settings = dict(per_device_train_batch_size=4, num_generations=4, max_completion_length=16, learning_rate=1e-4)

    def plain(timer):
        rewards = [format_reward, EditReward(EditEnvironment(InstantEditor(), InstantJudge()))]
        processor = AutoProcessor.from_pretrained(model, padding_side="left", truncation_side="left")
        return GRPOTrainer(model=str(model), reward_funcs=rewards, args=GRPOConfig(**common(out / "plain", steps),
                           **settings), train_dataset=load_from_disk(str(data)), processing_class=processor,
                           callbacks=[timer])

    def mira(timer):
        config = MiraGRPOConfig(model_name_or_path=str(model), dataset_name=str(data), rewards=["format", "edit"],
                                **common(out / "mira", steps), **settings)
        return build_grpo_trainer(config, editor=InstantEditor(), judge=InstantJudge(), callbacks=[timer])

    return plain, mira


def measure(pair, repeats: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds per step, and median setup seconds, of each side."""
    samples = {side: {"wall": [], "cpu": [], "setup": []} for side in ("plain", "mira")}
    for repeat in range(repeats):
        for side in (("plain", "mira"), ("mira", "plain"))[repeat % 2]:
            timer = StepTimer()
            t0 = time.perf_counter()
            trainer = pair[side == "mira"](timer)
            samples[side]["setup"].append(time.perf_counter() - t0)
            trainer.train()
            samples[side]["wall"].extend(timer.wall[warmup:])
            samples[side]["cpu"].extend(timer.cpu[warmup:])
    return {side: {k: statistics.median(v) for k, v in s.items()} for side, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    from mira.testing import build_tiny_qwen2_5_vl

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_qwen2_5_vl(root / "qwen2_5_vl")
        sft_data, grpo_data = write_data(root)
        print(f"tiny Qwen2.5-VL, {args.steps} steps x {args.repeats} runs per side, first {args.warmup} steps of "
              f"each run dropped; medians. CPU time is the steadier figure on a shared machine.")
        print(f"{'trainer':<6}{'wall s/step plain':>19}{'MIRA':>8}{'ratio':>7}{'CPU s/step plain':>18}{'MIRA':>8}"
              f"{'ratio':>7}{'setup s plain':>15}{'MIRA':>7}")
        for name, pair in (("SFT", sft_pair(model, sft_data, root / "sft-out", args.steps)),
                           ("GRPO", grpo_pair(model, grpo_data, root / "grpo-out", args.steps))):
            r = measure(pair, args.repeats, args.warmup)
            p, m = r["plain"], r["mira"]
            print(f"{name:<6}{p['wall']:>19.4f}{m['wall']:>8.4f}{m['wall'] / p['wall']:>7.3f}{p['cpu']:>18.4f}"
                  f"{m['cpu']:>8.4f}{m['cpu'] / p['cpu']:>7.3f}{p['setup']:>15.2f}{m['setup']:>7.2f}")

if __name__ == "__main__":
    main()
