"""A diffusers-style front door: ``MiraPipeline(...)(image=..., prompt=...).images[0]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mira.agent import MiraAgent
from mira.editors.base import Editor
from mira.images import ImageSource
from mira.policies.base import Policy
from mira.registry import load_editor, load_policy
from mira.trajectory import Trajectory


@dataclass
class MiraPipelineOutput:
    """Final images, one per input, and the trajectories that produced them."""

    images: list[Image.Image]
    trajectories: list[Trajectory] = field(default_factory=list)


class MiraPipeline:
    """Wraps :class:`~mira.agent.MiraAgent` with the call signature of a diffusers edit pipeline."""

    def __init__(self, policy: Policy, editor: Editor, **agent_options: Any):
        self.agent = MiraAgent(policy=policy, editor=editor, **agent_options)

    @classmethod
    def from_pretrained(
        cls,
        policy: str,
        editor: str = "flux-kontext",
        *,
        policy_options: dict[str, Any] | None = None,
        editor_options: dict[str, Any] | None = None,
        **agent_options: Any,
    ) -> "MiraPipeline":
        """Build the policy and editor from registry names, hub ids or local paths."""
        return cls(
            load_policy(policy, **(policy_options or {})),
            load_editor(editor, **(editor_options or {})),
            **agent_options,
        )

    def __call__(
        self,
        image: ImageSource | list[ImageSource],
        prompt: str | list[str],
        *,
        seed: int | None = None,
        max_steps: int | None = None,
        run_dir: str | Path | None = None,
    ) -> MiraPipelineOutput:
        images = image if isinstance(image, list) else [image]
        prompts = prompt if isinstance(prompt, list) else [prompt] * len(images)
        if len(prompts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one prompt per image")
        trajectories = []
        for i, (img, text) in enumerate(zip(images, prompts)):
            out_dir = None if run_dir is None else (Path(run_dir) / f"{i:03d}" if len(images) > 1 else Path(run_dir))
            trajectories.append(self.agent.run(img, text, seed=seed, max_steps=max_steps, run_dir=out_dir))
        return MiraPipelineOutput(images=[t.final_image for t in trajectories], trajectories=trajectories)
