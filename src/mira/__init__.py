"""MIRA: a multimodal iterative reasoning agent for image editing.

Light at import time: torch, diffusers and transformers load only when a backend that needs them is built.
"""

from mira.agent import AgentCallback, MiraAgent
from mira.editors.base import Editor, EditorError
from mira.images import InputError, load_image
from mira.pipeline import MiraPipeline, MiraPipelineOutput
from mira.policies.base import Policy, PolicyError
from mira.protocol import PROTOCOL_VERSION, STOP, Observation
from mira.registry import load_editor, load_policy
from mira.strategies import StepStrategy
from mira.trajectory import Step, Trajectory

__version__ = "0.1.0"

__all__ = [
    "AgentCallback",
    "Editor",
    "EditorError",
    "InputError",
    "MiraAgent",
    "MiraPipeline",
    "MiraPipelineOutput",
    "Observation",
    "PROTOCOL_VERSION",
    "Policy",
    "PolicyError",
    "STOP",
    "Step",
    "StepStrategy",
    "Trajectory",
    "load_editor",
    "load_image",
    "load_policy",
]
