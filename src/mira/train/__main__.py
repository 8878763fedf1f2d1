"""``python -m mira.train sft|grpo CONFIG.yaml``: the entry point for ``accelerate launch -m mira.train ...``."""

from mira.train.commands import main

main()
