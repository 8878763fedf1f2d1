"""``mira serve`` (HTTP API + web UI) and ``mira ui`` (the web UI alone).

Both take the backend flags of ``mira edit`` and load the models once, before listening. Only typer is imported at
module level (``mira --help`` stays fast); :mod:`mira.cli` registers these functions wrapped in its
``friendly_errors``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Annotated, Iterator, Optional

import typer

Policy = Annotated[Optional[str], typer.Option(
    help="Policy: Qwen-VL hub id or local path, 'passthrough', ... (default: the one `mira edit` uses).")]
Editor = Annotated[str, typer.Option(help="Editor: flux-kontext, qwen-image-edit, qwen-image-edit-plus, ...")]
EditorModel = Annotated[Optional[str], typer.Option(help="Hub id or local path of the editor's weights.")]
Device = Annotated[Optional[str], typer.Option(help="Torch device for local backends (default: cuda if present).")]
Dtype = Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32.")]
Offload = Annotated[str, typer.Option(help="Editor offload: none, model, sequential, group (low-memory GPUs).")]
Steps = Annotated[Optional[int], typer.Option(help="Editor denoising steps (default: the family's).")]
Guidance = Annotated[Optional[float], typer.Option(help="Editor guidance (default: the family's).")]
MaxPixels = Annotated[Optional[int], typer.Option(help="Editor working resolution in pixels (keeps aspect).")]
Temperature = Annotated[Optional[float], typer.Option(help="Policy sampling temperature.")]
PolicyOptions = Annotated[Optional[list[str]], typer.Option("--policy-option", help="Extra policy option key=value.")]
EditorOptions = Annotated[Optional[list[str]], typer.Option("--editor-option", help="Extra editor option key=value.")]
Host = Annotated[str, typer.Option(help="Interface to listen on (127.0.0.1: this machine only).")]
ApiKey = Annotated[Optional[str], typer.Option(envvar="MIRA_API_KEY", show_envvar=True,
                                               help="Require 'Authorization: Bearer KEY' (the UI asks for it as its "
                                                    "password).")]
MaxSteps = Annotated[int, typer.Option(min=1, max=64, help="Default most edits per request.")]
MaxStepsLimit = Annotated[int, typer.Option(min=1, max=64, help="Most edits a request may ask for.")]
Seed = Annotated[int, typer.Option(help="Default base seed of a request.")]
MaxQueue = Annotated[int, typer.Option(min=0, help="Edits that may wait behind the running one (then 503).")]
Timeout = Annotated[float, typer.Option(min=1, help="Seconds a request may take, queueing included (then 504).")]
MaxUploadMb = Annotated[float, typer.Option(min=0.1, help="Largest accepted image file, in MiB (then 413).")]
MaxUploadMp = Annotated[float, typer.Option(min=0.1, help="Largest accepted image, in megapixels (then 413).")]


def serve(
    policy: Policy = None,
    editor: Editor = "flux-kontext",
    editor_model: EditorModel = None,
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: ApiKey = None,
    model_name: Annotated[str, typer.Option(help="Model id clients send (OpenAI 'model').")] = "mira",
    ui: Annotated[bool, typer.Option(help="Mount the web UI at /ui.")] = True,
    max_steps: MaxSteps = 8,
    max_steps_limit: MaxStepsLimit = 32,
    seed: Seed = 0,
    max_queue: MaxQueue = 8,
    timeout: Timeout = 600.0,
    max_upload_mb: MaxUploadMb = 32.0,
    max_upload_mp: MaxUploadMp = 24.0,
    device: Device = None,
    dtype: Dtype = "auto",
    offload: Offload = "none",
    steps: Steps = None,
    guidance: Guidance = None,
    max_pixels: MaxPixels = None,
    temperature: Temperature = None,
    policy_option: PolicyOptions = None,
    editor_option: EditorOptions = None,
) -> None:
    """Serve MIRA over HTTP: OpenAI-compatible /v1/images/edits, streamed /v1/mira/edits, and the web UI at /ui."""
    import uvicorn

    from mira.cli import console
    from mira.serve.api_router import build_app

    warn_if_exposed(host, api_key)
    service = _service(**locals())
    app = build_app(service, api_key=api_key or None, ui=ui)
    console.print(f"[green]MIRA[/] serving '{model_name}' on http://{host}:{port}/v1"
                  + (f" · web UI http://{host}:{port}/ui" if ui else ""))
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def ui(
    policy: Policy = None,
    editor: Editor = "flux-kontext",
    editor_model: EditorModel = None,
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 7860,
    api_key: ApiKey = None,
    max_steps: MaxSteps = 8,
    max_steps_limit: MaxStepsLimit = 32,
    seed: Seed = 0,
    max_queue: MaxQueue = 8,
    timeout: Timeout = 600.0,
    max_upload_mb: MaxUploadMb = 32.0,
    max_upload_mp: MaxUploadMp = 24.0,
    device: Device = None,
    dtype: Dtype = "auto",
    offload: Offload = "none",
    steps: Steps = None,
    guidance: Guidance = None,
    max_pixels: MaxPixels = None,
    temperature: Temperature = None,
    policy_option: PolicyOptions = None,
    editor_option: EditorOptions = None,
) -> None:
    """Open the MIRA web UI alone: upload an image, type an instruction, watch every step."""
    from mira.serve.service import key_matches
    from mira.serve.ui import build_ui

    warn_if_exposed(host, api_key)
    service = _service(**locals())
    auth = None if not api_key else (lambda _user, password: key_matches(password, api_key))
    build_ui(service).launch(server_name=host, server_port=port, auth=auth, footer_links=[],
                             max_file_size=service.config.max_upload_bytes)


def warn_if_exposed(host: str, api_key: str | None, how: str = "set --api-key or MIRA_API_KEY") -> None:
    """Warn when a server listens beyond this machine without a key."""
    import ipaddress

    from mira.cli import console

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not api_key:
        console.print(f"[yellow]warning:[/] listening on {host} without an API key: anyone who can reach this "
                      f"machine can run edits ({how})")


def _service(*, policy: str | None, editor: str, editor_model: str | None, device: str | None, dtype: str, offload: str,
             steps: int | None, guidance: float | None, max_pixels: int | None, temperature: float | None,
             policy_option: list[str] | None, editor_option: list[str] | None, seed: int, max_steps: int,
             max_steps_limit: int, max_queue: int, timeout: float, max_upload_mb: float, max_upload_mp: float,
             model_name: str = "mira", **_other: object):
    """Load the models once and wrap them in an :class:`~mira.serve.service.EditService` (takes a command's locals)."""
    from mira.agent import MiraAgent
    from mira.cli import DEFAULT_POLICY, CLIError, build_backends, console
    from mira.serve.service import EditService, ServiceConfig

    if max_steps > max_steps_limit:
        raise CLIError(f"--max-steps {max_steps} is over --max-steps-limit {max_steps_limit}")
    with console.status("loading models"):
        pol, ed = build_backends(policy or DEFAULT_POLICY, editor, editor_model, device, dtype, offload, steps, guidance, max_pixels,
                                 temperature, policy_option, editor_option)
    config = ServiceConfig(model_name=model_name, max_queue=max_queue, timeout_s=timeout,
                           max_upload_bytes=int(max_upload_mb * 2**20), max_upload_pixels=int(max_upload_mp * 1e6),
                           default_max_steps=max_steps, max_steps_limit=max_steps_limit)
    return EditService(MiraAgent(policy=pol, editor=ed, seed=seed), config)


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on a background thread; yields its base URL (``port=0``: a free port)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped while starting")
            threading.Event().wait(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

