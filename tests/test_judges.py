"""VIEScore over any chat backend (retries, failures as data, async), the judge registry, EditScore and NR-IQA."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from PIL import Image

from eval_helpers import ChatServer, SDKChat, request_parts
from mira.judges.base import JudgeScores
from mira.judges.iqa import IQAJudge
from mira.judges.viescore import VIEScoreJudge
from mira.registry import UnknownBackendError, load_judge
from mira.vlm import ChatBackend


class ScriptedChat(ChatBackend):
    """Answers from a script per question kind ("sc" / "pq"); an Exception in the script is raised."""

    def __init__(self, sc, pq, delay: float = 0.0):
        self.script = {"sc": list(sc), "pq": list(pq)}
        self.requests: list[list[dict]] = []
        self.delay, self.in_flight, self.most_in_flight = delay, 0, 0

    def chat(self, messages, *, n=1, seed=None, **sampling):
        self.requests.append(messages)
        text = " ".join(p.get("text", "") for m in messages for p in m["content"] if p["type"] == "text")
        item = self.script["sc" if "edit_success" in text else "pq"].pop(0)
        if isinstance(item, Exception):
            raise item
        return [item] * n

    async def achat(self, messages, *, n=1, seed=None, **sampling):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        return self.chat(messages, n=n, seed=seed, **sampling)


@pytest.fixture
def images():
    return Image.new("RGB", (32, 32), (10, 20, 30)), Image.new("RGB", (32, 32), (200, 20, 30))


def test_sc_pq_overall_follow_viescore(images):
    chat = ScriptedChat(['{"score": [8, 4], "reasoning": "cup red, saucer lost"}'], ["Naturalness: 9\nArtifacts: 6"])
    scores = VIEScoreJudge(chat).score(*images, "make the cup red")
    assert scores.ok and (scores.sc, scores.pq) == (4, 6)
    assert scores.overall == pytest.approx(math.sqrt(24))
    assert scores.details["sc_scores"] == {"edit_success": 8, "overediting": 4}
    assert scores.details["sc_reasoning"] == "cup red, saucer lost"


def test_messages_carry_the_images_and_instruction_in_order(images):
    source, edited = images
    chat = ScriptedChat(["[7, 7]"], ["[7, 7]"])
    VIEScoreJudge(chat).score(source, edited, "make the cup red")
    sc, pq = chat.requests
    sc_images = [p["image"] for m in sc for p in m["content"] if p["type"] == "image"]
    pq_images = [p["image"] for m in pq for p in m["content"] if p["type"] == "image"]
    assert sc_images == [source, edited] and pq_images == [edited]
    assert "make the cup red" in sc[-1]["content"][-1]["text"]
    assert sc[0]["role"] == "system" and pq[0]["role"] == "system"


def test_an_unreadable_reply_is_shown_back_and_asked_again(images):
    chat = ScriptedChat(["I think it is fine.", '{"score": [6, 9]}'], ["8"])
    scores = VIEScoreJudge(chat, retries=1).score(*images, "x")
    assert scores.ok and scores.sc == 6 and scores.details["attempts"] == {"sc": 2, "pq": 1}
    retry = chat.requests[1]
    assert retry[-2] == {"role": "assistant", "content": [{"type": "text", "text": "I think it is fine."}]}
    assert "could not be read" in retry[-1]["content"][0]["text"]


def test_exhausted_retries_are_a_recorded_failure_not_an_exception(images):
    chat = ScriptedChat(["no idea"] * 3, ['{"score": [9, 9]}'])
    scores = VIEScoreJudge(chat, retries=2).score(*images, "x")
    assert not scores.ok and scores.overall is None and scores.pq == 9 and scores.sc is None
    assert "SC: unreadable reply" in scores.error and "after 3 attempts" in scores.error
    assert scores.details["raw"]["sc"] == "no idea"


def test_backend_errors_are_retried_then_recorded(images):
    chat = ScriptedChat([ConnectionError("refused"), "[5, 5]"], [ConnectionError("refused")] * 2)
    scores = VIEScoreJudge(chat, retries=1).score(*images, "x")
    assert scores.sc == 5 and scores.pq is None
    assert scores.error == "PQ: judge backend failed: ConnectionError: refused (after 2 attempts)"


def test_ascore_asks_both_questions_concurrently(images):
    chat = ScriptedChat(["[4, 8]"], ["[6, 6]"], delay=0.05)
    scores = asyncio.run(VIEScoreJudge(chat).ascore(*images, "x"))
    assert (scores.sc, scores.pq) == (4, 6) and chat.most_in_flight == 2


def test_judge_registry_resolves_specs_and_rejects_unknown_names(monkeypatch):
    from mira import registry

    with pytest.raises(UnknownBackendError, match="unknown judge 'vie-score'.*openai:"):
        load_judge("vie-score")
    monkeypatch.setitem(registry.CHAT_BACKENDS, "scripted", "eval_helpers:SDKChat")
    judge = load_judge("viescore:scripted", base_url="http://127.0.0.1:9/v1", retries=1, temperature=0.5)
    assert isinstance(judge, VIEScoreJudge) and judge.retries == 1
    assert judge.backend.base_url == "http://127.0.0.1:9/v1" and judge.sampling == {"temperature": 0.5}
    assert judge.config()["backend"] == {"model": "scripted", "base_url": "http://127.0.0.1:9/v1"}


def test_viescore_over_an_http_chat_server(images):
    def respond(body):
        text, imgs, _ = request_parts(body)
        return json.dumps({"score": [len(imgs) * 3, 8]})  # SC sees two images, PQ one

    with ChatServer(respond) as server:
        judge = VIEScoreJudge(SDKChat(server.base_url))
        scores = judge.score(*images, "make it red")
        again = asyncio.run(judge.ascore(*images, "make it red"))
    assert (scores.sc, scores.pq) == (6, 3) and again.to_dict() == scores.to_dict()


# -- NR-IQA ---------------------------------------------------------------------------------------------------------
def brightness(batch):
    """A stand-in IQA model: the mean pixel value of a [1, 3, H, W] tensor in 0-1."""
    assert batch.ndim == 4 and batch.shape[1] == 3 and float(batch.max()) <= 1.0
    return batch.mean()


def test_iqa_judge_maps_its_metric_to_pq_on_0_10():
    judge = IQAJudge(brightness, low=0.0, high=1.0)
    scores = judge.score(Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), (255, 255, 255)), "x")
    assert scores.pq == pytest.approx(10) and scores.overall == scores.pq and scores.sc is None
    dark = judge.score(Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), (51, 51, 51)), "x")
    assert dark.pq == pytest.approx(2.0) and dark.details["raw"] == pytest.approx(0.2)


def test_iqa_failures_are_recorded():
    def broken(batch):
        raise RuntimeError("CUDA out of memory")

    img = Image.new("RGB", (8, 8))
    assert "CUDA out of memory" in IQAJudge(broken).score(img, img, "x").error
    assert "nan" in IQAJudge(lambda b: float("nan")).score(img, img, "x").error
    with pytest.raises(ValueError, match="range"):
        IQAJudge("some-unknown-metric")


def test_iqa_without_its_libraries_says_what_to_install():
    pytest.importorskip("torch")
    try:
        import pyiqa  # noqa: F401
        pytest.skip("pyiqa is installed: building a metric would download weights")
    except ImportError:
        pass
    try:
        import torchmetrics  # noqa: F401
        pytest.skip("torchmetrics is installed: building ARNIQA would download weights")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install pyiqa"):
        load_judge("arniqa")


# -- EditScore -----------------------------------------------------------------------------------------------------
def test_editscore_adapter_over_its_openai_backbone(images):
    pytest.importorskip("editscore")
    from mira.judges.editscore import EditScoreJudge

    def respond(body):
        text, imgs, _ = request_parts(body)
        return json.dumps({"reasoning": "r", "score": [20, 10] if len(imgs) == 2 else [15]})

    with ChatServer(respond) as server:
        judge = load_judge("editscore:scripted", base_url=server.base_url)
        assert isinstance(judge, EditScoreJudge) and judge.backbone == "openai"
        scores = judge.score(*images, "make it red")
    assert scores.ok
    assert scores.details["prompt_following"] == pytest.approx(8) and scores.sc == pytest.approx(4)
    assert scores.pq == pytest.approx(6) and scores.overall == pytest.approx(math.sqrt(24))


def test_editscore_random_guesses_become_failures(images):
    pytest.importorskip("editscore")
    with ChatServer(lambda body: "I can't judge this.") as server:
        scores = load_judge("editscore:scripted", base_url=server.base_url).score(*images, "x")
    assert isinstance(scores, JudgeScores) and not scores.ok and "could not read" in scores.error
