"""Helpers for the server tests: a gated editor, a service factory, and a running server in a background thread."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

from fakes import StripeEditor

from mira.agent import MiraAgent
from mira.policies.baselines import StaticPlanPolicy
from mira.serve.api_router import build_app
from mira.serve.commands import running_server
from mira.serve.service import EditService, ServiceConfig

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "coffee.jpg"
PLAN = ["make the cup red", "make the saucer blue", "make the table black"]


class GatedEditor(StripeEditor):
    """The stripe editor, optionally slow, that can be held at a gate to keep the worker busy."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def edit(self, image, instruction, *, seed=None):
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("test gate never opened")
        time.sleep(self.delay)
        return super().edit(image, instruction, seed=seed)


def make_service(policy=None, editor=None, **config) -> EditService:
    agent = MiraAgent(policy=policy or StaticPlanPolicy(PLAN), editor=editor or GatedEditor(), seed=3)
    return EditService(agent, ServiceConfig(**config))


@contextlib.contextmanager
def serve(service: EditService, api_key: str | None = None, ui: bool = False) -> Iterator[str]:
    """Base URL of a server on 127.0.0.1 (free port) around ``service``; stopped on exit."""
    with running_server(build_app(service, api_key=api_key, ui=ui)) as url:
        yield url
