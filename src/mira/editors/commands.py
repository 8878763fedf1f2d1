"""``mira serve-editor``: put a local editor behind HTTP for ``--editor http://HOST:PORT`` (see
:mod:`mira.editors.remote` for the wire format). Only typer is imported here; the editor loads when the command runs.
"""

from __future__ import annotations

import os
import socket
from typing import Optional

import typer


def serve_editor(
    editor: str = typer.Option(..., help="Editor to serve: flux-kontext, qwen-image-edit, openai-images:MODEL, ..."),
    editor_model: Optional[str] = typer.Option(None, help="Hub id or local path of the editor's weights."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8100, min=1, max=65535, help="Port to listen on."),
    concurrency: int = typer.Option(1, min=1, help="Edits run at once; further requests wait their turn."),
    api_key_env: Optional[str] = typer.Option(
        None, help="Name of an environment variable holding a key that clients must send as a Bearer token."),
    device: Optional[str] = typer.Option(None, help="Torch device (default: cuda if present)."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32."),
    offload: str = typer.Option("none", help="Offload: none, model, sequential, group (low-memory GPUs)."),
    steps: Optional[int] = typer.Option(None, help="Denoising steps (default: the family's)."),
    guidance: Optional[float] = typer.Option(None, help="Guidance (default: the family's)."),
    max_pixels: Optional[int] = typer.Option(None, help="Working resolution in pixels (keeps aspect)."),
    editor_option: Optional[list[str]] = typer.Option(None, "--editor-option", help="Extra editor option key=value."),
    log_level: str = typer.Option("warning", help="Server log level: debug, info (one line per request), warning."),
) -> None:
    """Serve a local editor over HTTP; drive it with `mira edit ... --editor http://HOST:PORT`."""
    from mira.cli import CLIError, build_editor, console, escape
    from mira.serve.commands import warn_if_exposed

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise CLIError(f"--api-key-env {api_key_env}: that environment variable is not set")
    sock = _bind(host, port)
    with console.status("loading editor"):
        backend = build_editor(editor, editor_model, device, dtype, offload, steps, guidance, max_pixels, editor_option)
    import uvicorn

    from mira.editors.remote import editor_app

    app = editor_app(backend, concurrency=concurrency, api_key=api_key)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}"
    console.print(f"serving [bold]{escape(backend.name)}[/] at {url} (clients: --editor {url})")
    warn_if_exposed(host, api_key, "set --api-key-env")
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, or a one-line error saying why not."""
    from mira.cli import CLIError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise CLIError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --host or --port")
    return sock

