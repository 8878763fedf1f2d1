"""Names -> backends. The CLI, YAML configs and the server all resolve backends here, so they speak the same names.

Entries are import paths, so nothing heavy is imported until a backend is built. A spec is either a registered name
(``flux-kontext``), a ``prefix:argument`` form (``openai:gpt-4.1``), or, for policies, a hub id or local path of a
Qwen-VL checkpoint.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from mira.editors.base import Editor
from mira.policies.base import Policy

# name -> "module:factory"; a factory takes keyword options and returns the backend.
EDITORS: dict[str, str] = {
    "flux-kontext": "mira.editors.diffusers:DiffusersEditor.flux_kontext",
    "qwen-image-edit": "mira.editors.diffusers:DiffusersEditor.qwen_image_edit",
    "qwen-image-edit-plus": "mira.editors.diffusers:DiffusersEditor.qwen_image_edit_plus",
    "diffusers": "mira.editors.diffusers:DiffusersEditor",
    "testbed": "mira.testbed.editor:TestbedEditor",
}
# prefix -> "module:factory"; the factory receives the text after the prefix as its first argument.
EDITOR_PREFIXES: dict[str, str] = {}

POLICIES: dict[str, str] = {
    "passthrough": "mira.policies.baselines:PassthroughPolicy",
    "testbed-oracle": "mira.testbed.oracle:OraclePolicy",
}
POLICY_PREFIXES: dict[str, str] = {
    # evaluation baselines over a chat-backend spec: rewrite:openai:gpt-4.1, plan:Qwen/Qwen2.5-VL-7B-Instruct
    "rewrite:": "mira.policies.baselines:RewritePolicy.from_spec",
    "plan:": "mira.policies.baselines:VLMPlanPolicy.from_spec",
}
DEFAULT_POLICY_FACTORY = "mira.policies.transformers:TransformersPolicy"

# Chat backends (mira.vlm.ChatBackend): the VLMs behind judges and the rewrite / plan baselines.
CHAT_BACKENDS: dict[str, str] = {}
CHAT_PREFIXES: dict[str, str] = {
    "openai:": "mira.clients.openai_chat:OpenAIChatBackend",
}
DEFAULT_CHAT_FACTORY = "mira.policies.transformers:TransformersPolicy"

# Judges (mira.judges.base.Judge). "openai:MODEL" and "viescore:CHAT-SPEC" are VIEScore over a chat backend.
JUDGES: dict[str, str] = {
    "testbed": "mira.testbed.judge:TestbedJudge",
    "editscore": "mira.judges.editscore:EditScoreJudge",
    "arniqa": "mira.judges.iqa:IQAJudge.arniqa",
    "topiq": "mira.judges.iqa:IQAJudge.topiq",
}
JUDGE_PREFIXES: dict[str, str] = {
    "openai:": "mira.judges.viescore:VIEScoreJudge.openai",
    "viescore:": "mira.judges.viescore:VIEScoreJudge.from_spec",
    "editscore:": "mira.judges.editscore:EditScoreJudge",
    "iqa:": "mira.judges.iqa:IQAJudge",
}
DEFAULT_JUDGE_FACTORY = "mira.judges.viescore:VIEScoreJudge.from_spec"


class UnknownBackendError(ValueError):
    """A backend name that nothing is registered under."""


def _resolve(target: str) -> Callable[..., Any]:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def load_editor(spec: str, **options: Any) -> Editor:
    """Build an editor from a registered name or prefix form, passing ``options`` to its factory."""
    if spec in EDITORS:
        return _resolve(EDITORS[spec])(**options)
    for prefix, target in EDITOR_PREFIXES.items():
        if spec.startswith(prefix):
            return _resolve(target)(spec[len(prefix):] if prefix.endswith(":") else spec, **options)
    known = ", ".join(sorted(EDITORS) + [p + "..." for p in EDITOR_PREFIXES])
    raise UnknownBackendError(f"unknown editor '{spec}'; choose one of: {known}")


def load_policy(spec: str, **options: Any) -> Policy:
    """Build a policy from a registered name, a prefix form, or a Qwen-VL hub id / local checkpoint path."""
    if spec in POLICIES:
        return _resolve(POLICIES[spec])(**options)
    for prefix, target in POLICY_PREFIXES.items():
        if spec.startswith(prefix):
            return _resolve(target)(spec[len(prefix):] if prefix.endswith(":") else spec, **options)
    return _resolve(DEFAULT_POLICY_FACTORY)(spec, **options)


def _build(kind: str, spec: str, names: dict[str, str], prefixes: dict[str, str], default: str,
           options: dict[str, Any]) -> Any:
    if spec in names:
        return _resolve(names[spec])(**options)
    for prefix, target in prefixes.items():
        if spec.startswith(prefix):
            return _resolve(target)(spec[len(prefix):], **options)
    if "/" in spec or Path(spec).exists():  # a hub id or a local checkpoint
        return _resolve(default)(spec, **options)
    known = ", ".join(sorted(names) + [p + "..." for p in prefixes])
    raise UnknownBackendError(f"unknown {kind} '{spec}'; choose one of: {known}, or a model path / hub id")


def load_chat(spec: str, **options: Any) -> Any:
    """A :class:`mira.vlm.ChatBackend` from ``openai:MODEL`` (options: base_url, api_key_env ...) or a local VLM."""
    return _build("chat backend", spec, CHAT_BACKENDS, CHAT_PREFIXES, DEFAULT_CHAT_FACTORY, options)


def load_judge(spec: str, **options: Any) -> Any:
    """A :class:`mira.judges.base.Judge` from a registered name (``testbed``, ``editscore``, ``arniqa``, ``topiq``),
    a prefix form (``openai:gpt-4.1``, ``viescore:CHAT-SPEC``, ``iqa:METRIC``) or a local VLM checkpoint (VIEScore
    over it)."""
    return _build("judge", spec, JUDGES, JUDGE_PREFIXES, DEFAULT_JUDGE_FACTORY, options)
