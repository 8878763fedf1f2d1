"""The MIRA web UI (Gradio): upload an image, type an instruction, watch every step arrive, download the result.

The page runs edits through the same :class:`~mira.serve.service.EditService` as the HTTP API, so UI and API users
share one queue and one set of loaded models. Each UI run writes a run folder (images, ``trajectory.json``,
``report.html``) in a private temporary folder and offers it as a zip; only the latest ``keep_runs`` are kept.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections import deque
from pathlib import Path
from typing import Any, AsyncIterator

from mira.serve.service import Decision, EditService, Failed, Finished, Queued, ServiceError, Started, StepDone

STEP_COLUMNS = ["step", "action", "reasoning", "policy s", "editor s"]


class _RunFolders:
    """Run folders of UI edits under one private temporary folder; the oldest beyond ``keep`` are deleted."""

    def __init__(self, keep: int):
        self.root = Path(tempfile.mkdtemp(prefix="mira-ui-"))
        self.keep = keep
        self._folders: deque[Path] = deque()

    def new(self) -> Path:
        folder = self.root / uuid.uuid4().hex[:12]
        folder.mkdir()
        self._folders.append(folder)
        while len(self._folders) > self.keep:
            shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return folder


def build_ui(service: EditService, *, keep_runs: int = 32):
    """The Gradio Blocks page driving ``service``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    cfg = service.config
    folders = _RunFolders(keep_runs)

    async def run_edit(image_path: str | None, instruction: str, max_steps: float, seed: float
                       ) -> AsyncIterator[tuple[Any, ...]]:
        if not image_path:
            raise gr.Error("upload an image first")
        folder = folders.new()
        data = await asyncio.to_thread(Path(image_path).read_bytes)
        try:
            request = await asyncio.to_thread(service.prepare, data, instruction, max_steps=int(max_steps),
                                              seed=int(seed), instruction_param="instruction", run_dir=folder / "run")
            job = service.submit(request)
        except ServiceError as exc:
            raise gr.Error(exc.message) from None
        gallery: list[tuple[Any, str]] = [(request.image, "original")]
        rows: list[list[Any]] = []
        try:
            async for event in job.events():
                result = archive = None
                if isinstance(event, Queued):
                    status = "starting" if event.position == 0 else f"queued: {event.position} edit(s) ahead"
                elif isinstance(event, Started):
                    status = "running"
                elif isinstance(event, Decision):
                    what = "stop" if event.parsed.is_stop else event.parsed.action
                    status = f"step {event.index}: {what}" + ("" if event.parsed.is_stop else " (editing...)")
                elif isinstance(event, StepDone):
                    step = event.step
                    if step.image is not None:
                        gallery.append((step.image, f"{step.index}: {step.action}"))
                    rows.append([step.index, step.action, step.reasoning, round(step.policy_seconds, 2),
                                 round(step.editor_seconds, 2)])
                    status = f"step {step.index} done"
                elif isinstance(event, Finished):
                    traj = event.trajectory
                    result = traj.final_image
                    archive = await asyncio.to_thread(
                        shutil.make_archive, str(folder / f"mira-run-{traj.id}"), "zip", folder / "run")
                    status = f"done: {traj.stop_reason} after {len(traj.steps)} step(s)"
                    status += f" ({traj.error})" if traj.error else ""
                else:
                    assert isinstance(event, Failed)
                    raise gr.Error(event.error.message)
                yield list(gallery), list(rows), status, result, archive
        finally:
            job.cancel()

    with gr.Blocks(title="MIRA image editing", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# MIRA\nAn agent that edits an image one atomic step at a time until the instruction is done.")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"],
                                 elem_id="mira-image")
                instruction = gr.Textbox(label="Instruction", lines=3, elem_id="mira-instruction",
                                         placeholder="make the cup red, the saucer blue and the table black")
                with gr.Accordion("Settings", open=False):
                    max_steps = gr.Slider(1, cfg.max_steps_limit, value=cfg.default_max_steps, step=1,
                                          label="Max steps", elem_id="mira-max-steps")
                    seed = gr.Number(value=service.agent.config.seed, precision=0, minimum=0, label="Seed",
                                     elem_id="mira-seed")
                run = gr.Button("Edit", variant="primary", elem_id="mira-run")
                status = gr.Textbox(label="Status", interactive=False, elem_id="mira-status")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Steps", columns=4, height="auto", object_fit="contain",
                                     elem_id="mira-gallery")
                result = gr.Image(type="pil", label="Result", format="png", interactive=False,
                                  elem_id="mira-result")
                archive = gr.File(label="Run folder (zip)", interactive=False, elem_id="mira-archive")
        steps = gr.Dataframe(headers=STEP_COLUMNS, label="Steps", interactive=False, wrap=True,
                             elem_id="mira-steps")
        run.click(run_edit, inputs=[image, instruction, max_steps, seed],
                  outputs=[gallery, steps, status, result, archive])
    return demo
