"""Verifier-guided steps: best-of-N, adaptive N, rollback, routing, detail preservation and budget, with scripted
editors and judges (the judge reads the red level of the image as its score)."""

import asyncio
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fakes import ScriptedPolicy, think
from mira import STOP, MiraAgent, Trajectory
from mira.agent import step_seed
from mira.editors.base import Editor, EditorError
from mira.judges.base import Judge, JudgeScores
from mira.policies.base import Policy
from mira.strategies import Route, StepStrategy, budget, change_mask, preserve_details, region_fidelity


class RedEditor(Editor):
    """Returns a flat image whose red level is the next scripted value (an Exception in the script is raised)."""

    name = "red"

    def __init__(self, values, name=None):
        self.values = list(values)
        self.name = name or self.name
        self.calls: list[tuple[int, str, int]] = []  # (red level of the input, instruction, seed)

    def edit(self, image, instruction, *, seed=None):
        self.calls.append((image.getpixel((0, 0))[0], instruction, seed))
        value = self.values.pop(0)
        if isinstance(value, Exception):
            raise value
        return Image.new("RGB", image.size, (value, 0, 0))


class RedJudge(Judge):
    """Score = red level / 25.5 (0-10); an Exception or a JudgeScores in ``script`` is raised / returned instead."""

    name = "red-judge"

    def __init__(self, script=()):
        self.script = list(script)
        self.calls = 0
        self.async_calls = 0

    def score(self, source, edited, instruction):
        self.calls += 1
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, Exception):
                raise item
            if isinstance(item, JudgeScores):
                return item
        value = edited.getpixel((0, 0))[0] / 25.5
        return JudgeScores(sc=value, pq=10.0, overall=value)

    async def ascore(self, source, edited, instruction):
        self.async_calls += 1
        return await super().ascore(source, edited, instruction)


def agent(script, editor, strategy=None, judge=None, **kw):
    return MiraAgent(policy=ScriptedPolicy(script), editor=editor, verifier=judge, strategy=strategy, **kw)


def red(img):
    return img.getpixel((0, 0))[0]


def start(level=0):
    return Image.new("RGB", (32, 24), (level, 0, 0))


def test_best_of_n_keeps_the_best_and_records_every_candidate(tmp_path):
    editor, judge = RedEditor([40, 200, 90]), RedJudge()
    a = agent([think("make it red"), think(STOP)], editor, StepStrategy(n_candidates=3), judge)
    t = a.run(start(), "make it red", run_dir=tmp_path / "run")
    step = t.steps[0]
    assert red(step.image) == 200 and t.stop_reason == "stop"
    assert [c["score"] for c in step.candidates] == pytest.approx([40 / 25.5, 200 / 25.5, 90 / 25.5])
    assert [c.get("chosen", False) for c in step.candidates] == [False, True, False]
    assert len({c["seed"] for c in step.candidates}) == 3 and step.seed == step.candidates[1]["seed"]
    assert step.scores["overall"] == pytest.approx(200 / 25.5) and t.editor_calls == 3 and judge.calls == 3
    run = tmp_path / "run"
    assert [c["image_path"] for c in step.candidates] == ["step_001_cand_1.png", "step_001.png", "step_001_cand_3.png"]
    assert red(Image.open(run / "step_001_cand_1.png").convert("RGB")) == 40
    data = json.loads((run / "trajectory.json").read_text())
    assert data["config"]["strategy"]["n_candidates"] == 3 and data["config"]["verifier"]["name"] == "red-judge"
    loaded = Trajectory.load(run)
    assert loaded.steps[0].candidates == json.loads(json.dumps(step.candidates)) and loaded.editor_calls == 3
    html = (run / "report.html").read_text()
    assert "3 candidates" in html and "step_001_cand_3.png" in html and "score 7.84" in html


@pytest.mark.parametrize("strategy, calls", [
    (StepStrategy(n_candidates=5, adaptive_threshold=7.0), 2),  # scores 1.6, 7.8 (clears 7)
    (StepStrategy(n_candidates=5, adaptive_gain=3.0), 3),  # from 3.9: gains -0.4, +1.2, +3.9 (clears 3)
])
def test_adaptive_n_stops_sampling_early(strategy, calls):
    values = [90, 130, 200, 10, 10] if strategy.adaptive_gain else [40, 200, 10, 10, 10]
    editor, judge = RedEditor(values), RedJudge()
    t = agent([think("make it red"), think(STOP)], editor, strategy, judge).run(start(100), "x")
    assert len(editor.calls) == calls and len(t.steps[0].candidates) == calls
    assert red(t.steps[0].image) == 200
    if strategy.adaptive_gain:  # the previous image was scored once, as the baseline
        assert t.steps[0].extra["baseline_score"] == pytest.approx(100 / 25.5) and judge.calls == calls + 1


def test_rollback_discards_a_worse_step_and_retries_from_the_previous_image():
    editor, judge = RedEditor([150, 50, 180]), RedJudge()
    a = agent([think("step a"), think("step b"), think(STOP)], editor, StepStrategy(rollback=1), judge)
    t = a.run(start(100), "x")
    first, second = t.steps[0], t.steps[1]
    assert red(first.image) == 150 and red(second.image) == 180
    # both tries of step b started from step a's image, not from the discarded one
    assert [c[0] for c in editor.calls] == [100, 150, 150]
    assert [c["round"] for c in second.candidates] == [1, 2] and second.candidates[1]["chosen"]
    assert "round 1" in second.extra["rollbacks"][0] and second.seed != second.candidates[0]["seed"]
    assert t.edits == ["step a", "step b"] and t.editor_calls == 3


def test_rollback_budget_spent_rejects_the_step_and_keeps_the_previous_image(tmp_path):
    editor = RedEditor([150, 50, 60, 170])
    policy = ScriptedPolicy([think("step a"), think("step b"), think("step b again"), think(STOP)])
    a = MiraAgent(policy=policy, editor=editor, verifier=RedJudge(), strategy=StepStrategy(rollback=1))
    t = a.run(start(100), "x", run_dir=tmp_path)
    rejected = t.steps[1]
    assert rejected.image is None and "previous image is kept" in rejected.extra["rejected"]
    assert not any(c.get("chosen") for c in rejected.candidates) and len(rejected.candidates) == 2
    assert (tmp_path / "step_002_cand_1.png").is_file() and (tmp_path / "step_002_cand_2.png").is_file()
    assert not (tmp_path / "step_002.png").exists()
    # the next decision sees step a's image and a history without the rejected edit
    observation = policy.calls[2][0]
    assert red(observation.current) == 150 and observation.history == ("step a",)
    assert t.edits == ["step a", "step b again"] and red(t.final_image) == 170
    assert "rejected" in (tmp_path / "report.html").read_text()


def test_negative_rollback_margin_demands_progress():
    editor = RedEditor([105, 140])  # from 100: +0.2 is not progress enough with margin -1; +1.6 is
    t = agent([think("a"), think(STOP)], editor, StepStrategy(rollback=1, rollback_margin=-1.0), RedJudge()).run(
        start(100), "x")
    assert red(t.steps[0].image) == 140 and len(t.steps[0].extra["rollbacks"]) == 1


def test_editor_failing_during_a_rollback_round_ends_the_step_without_an_error():
    editor = RedEditor([50, EditorError("oom"), EditorError("oom"), 200])
    t = agent([think("a"), think(STOP)], editor, StepStrategy(rollback=3), RedJudge()).run(start(100), "x")
    step = t.steps[0]
    assert t.stop_reason == "stop" and step.image is None and "rejected" in step.extra
    assert len(step.extra["rollbacks"]) == 1 and len(editor.calls) == 3


def test_rollback_ignores_unknown_scores():
    judge = RedJudge([JudgeScores(error="judge down")])  # the baseline cannot be scored: nothing is rolled back
    t = agent([think("a"), think(STOP)], RedEditor([10]), StepStrategy(rollback=2), judge).run(start(100), "x")
    assert red(t.steps[0].image) == 10 and t.steps[0].extra["baseline_score"] is None


def test_editor_call_budget_ends_the_run():
    editor = RedEditor([10, 20, 30, 40, 50, 60])
    policy_script = [think(f"edit {i}") for i in range(6)]
    t = agent(policy_script, editor, StepStrategy(n_candidates=2, max_editor_calls=3), RedJudge()).run(start(), "x")
    assert t.stop_reason == "budget" and "3 of 3" in t.error
    assert len(editor.calls) == 3 and t.editor_calls == 3
    assert [len(s.candidates) for s in t.steps] == [2, 1, 0]
    assert t.steps[2].image is None and "budget" in t.steps[2].extra["not_executed"]


def test_call_budget_still_lets_the_policy_stop():
    editor = RedEditor([10, 20])
    t = agent([think("a"), think("b"), think(STOP)], editor, StepStrategy(max_editor_calls=2)).run(start(), "x")
    assert t.stop_reason == "stop" and len(editor.calls) == 2


@pytest.fixture
def slow_editor(monkeypatch):
    """RedEditor whose every call takes one second of a fake clock that the budget reads."""
    clock = [0.0]
    monkeypatch.setattr(budget, "monotonic", lambda: clock[0])

    class SlowEditor(RedEditor):
        def edit(self, image, instruction, *, seed=None):
            clock[0] += 1.0
            return super().edit(image, instruction, seed=seed)

    return SlowEditor


def test_time_budget_ends_the_run(slow_editor):
    editor = slow_editor([10] * 10)
    t = agent([think(f"edit {i}") for i in range(10)], editor, StepStrategy(max_seconds=2.5)).run(start(), "x")
    assert t.stop_reason == "budget" and "time budget" in t.error
    assert len(editor.calls) == 3 and len(t.steps) == 3


def test_time_budget_stops_sampling_within_a_step(slow_editor):
    editor = slow_editor([10, 30, 20, 90])
    strategy = StepStrategy(n_candidates=4, max_seconds=1.5)
    t = agent([think("a"), think(STOP)], editor, strategy, RedJudge()).run(start(), "x")
    assert len(editor.calls) == 2 and red(t.steps[0].image) == 30 and t.stop_reason == "budget"


def test_routing_rules_send_each_step_to_its_editor_and_record_why():
    paint, text = RedEditor([100], name="paint"), RedEditor([50], name="text")
    strategy = StepStrategy(routes=("sign|lettering=text",))
    a = agent([think("write HELLO on the sign"), think("make the wall red"), think(STOP)], [paint, text], strategy)
    t = a.run(start(), "x")
    assert [s.editor for s in t.steps[:2]] == ["text", "paint"]
    assert t.steps[0].extra["route"] == {"editor": "text", "reason": "rule 'sign|lettering'", "rule": "sign|lettering"}
    assert t.steps[1].extra["route"]["reason"] == "default editor"
    assert [c[1] for c in text.calls] == ["write HELLO on the sign"] and len(paint.calls) == 1
    assert set(t.config["editors"]) == {"paint", "text"}


def test_verifier_picks_among_editors_and_the_winner_is_recorded():
    paint, text = RedEditor([60], name="paint"), RedEditor([210], name="text")
    strategy = StepStrategy(compare_editors=True)
    t = agent([think("make the wall red"), think(STOP)], {"paint": paint, "text": text}, strategy, RedJudge()).run(
        start(), "x")
    step = t.steps[0]
    assert step.editor == "text" and red(step.image) == 210
    assert [c["editor"] for c in step.candidates] == ["paint", "text"]
    assert step.extra["route"]["reason"] == "verifier picked text among paint, text"


def test_unknown_route_editor_and_missing_verifier_are_refused():
    with pytest.raises(ValueError, match="'nope' is not registered"):
        MiraAgent(ScriptedPolicy(), RedEditor([]), strategy=StepStrategy(routes=("x=nope",)))
    with pytest.raises(ValueError, match="verifier"):
        MiraAgent(ScriptedPolicy(), RedEditor([]), strategy=StepStrategy(n_candidates=2))
    with pytest.raises(ValueError, match="distinct names"):
        MiraAgent(ScriptedPolicy(), [RedEditor([]), RedEditor([])])


@pytest.mark.parametrize("kwargs, message", [
    ({"n_candidates": 0}, "n_candidates"), ({"rollback": -1}, "rollback"), ({"score_key": "x"}, "score_key"),
    ({"max_editor_calls": 0}, "max_editor_calls"), ({"max_seconds": 0}, "max_seconds"),
    ({"routes": ("(unclosed=a",)}, "not a valid regex"), ({"routes": ("no-equals",)}, "regex=editor"),
])
def test_strategy_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StepStrategy(**kwargs)


def test_route_parse_splits_at_the_last_equals_sign():
    assert Route.parse("a=b|c==d = qwen ") == Route("a=b|c==d", "qwen")


class PhrasingPolicy(Policy):
    name = "phrasings"

    def __init__(self):
        self.ns = []

    def generate(self, observation, *, n=1, seed=None):
        self.ns.append(n)
        if observation.history:
            return [think(STOP)] * n
        return [think("make it red"), think("make it red."), think("paint it crimson"), think(STOP)][:n]


def test_policy_phrasings_are_candidates_and_the_verifier_picks_one():
    class WordEditor(RedEditor):
        def edit(self, image, instruction, *, seed=None):
            self.calls.append((red(image), instruction, seed))
            return Image.new("RGB", image.size, (220 if "crimson" in instruction else 60, 0, 0))

    policy, editor = PhrasingPolicy(), WordEditor([])
    strategy = StepStrategy(n_candidates=3, policy_candidates=4)
    t = MiraAgent(policy, editor, verifier=RedJudge(), strategy=strategy).run(start(), "x")
    # duplicates and <STOP> are not phrasings; the third candidate cycles back to the first phrasing
    assert [c[1] for c in editor.calls] == ["make it red", "paint it crimson", "make it red"]
    assert policy.ns[0] == 4 and t.steps[0].action == "paint it crimson" and t.edits == ["paint it crimson"]
    assert t.steps[0].raw_completion == think("make it red")


def test_failed_candidates_are_retried_and_recorded():
    editor = RedEditor([EditorError("oom"), 30, 80])
    t = agent([think("a"), think(STOP)], editor, StepStrategy(n_candidates=2), RedJudge()).run(start(), "x")
    cands = t.steps[0].candidates
    assert [("error" in c) for c in cands] == [True, False, False] and "oom" in cands[0]["error"]
    assert red(t.steps[0].image) == 80 and t.editor_calls == 3


def test_editor_failing_every_try_is_an_editor_error():
    editor = RedEditor([EditorError("oom")] * 5)
    t = agent([think("a"), think(STOP)], editor, StepStrategy(n_candidates=3), RedJudge()).run(start(), "x")
    assert t.stop_reason == "editor_error" and len(editor.calls) == 2 and "failed 2 times" in t.error


def test_verifier_failures_are_data():
    judge = RedJudge([RuntimeError("judge crashed"), JudgeScores(error="unparseable")])
    t = agent([think("a"), think(STOP)], RedEditor([250, 240, 30]), StepStrategy(n_candidates=3), judge).run(
        start(), "x")
    cands = t.steps[0].candidates
    assert "judge crashed" in cands[0]["scores"]["error"] and cands[1]["scores"]["error"] == "unparseable"
    assert [c["score"] for c in cands][:2] == [None, None] and cands[2]["chosen"]  # a scored candidate beats unscored


def test_plain_loop_with_a_verifier_records_scores():
    t = agent([think("a"), think(STOP)], RedEditor([51]), judge=RedJudge()).run(start(), "x")
    assert t.steps[0].scores == {"overall": 2.0, "sc": 2.0, "pq": 10.0}
    assert t.steps[0].seed == step_seed(0, 1) and "strategy" not in t.config


def test_async_run_matches_sync_and_awaits_the_verifier():
    def make():
        judge = RedJudge()
        return agent([think("a"), think("b"), think(STOP)], RedEditor([120, 90, 30, 50, 200, 10]),
                     StepStrategy(n_candidates=2, rollback=1), judge), judge

    sync_agent, _ = make()
    sync = sync_agent.run(start(100), "x")
    async_agent, judge = make()
    asyn = asyncio.run(async_agent.arun(start(100), "x"))
    assert [s.to_dict() | {"policy_seconds": 0, "editor_seconds": 0, "candidates": 0} for s in sync.steps] == \
        [s.to_dict() | {"policy_seconds": 0, "editor_seconds": 0, "candidates": 0} for s in asyn.steps]
    assert [[c["score"] for c in s.candidates] for s in sync.steps] == \
        [[c["score"] for c in s.candidates] for s in asyn.steps]
    assert judge.async_calls == judge.calls > 0 and red(asyn.final_image) == 200
    assert asyn.steps[1].extra["rollbacks"] and [c["round"] for c in asyn.steps[1].candidates] == [1, 1, 2, 2]


# -- detail preservation ---------------------------------------------------------------------------------------

SQUARES = {f"square {i}": (4 + 12 * i, 8 + 6 * i) for i in range(5)}


def textured(size=(80, 64), seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=(size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)


class DriftEditor(Editor):
    """Paints the named 10x10 square white and, like a diffusion re-render, adds slight noise to every pixel."""

    name = "drift"

    def edit(self, image, instruction, *, seed=None):
        rng = np.random.default_rng(seed)
        arr = np.asarray(image, dtype=np.float64) + rng.normal(0, 3, size=(image.height, image.width, 3)) + 1.0
        out = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        x, y = SQUARES[instruction]
        ImageDraw.Draw(out).rectangle([x, y, x + 9, y + 9], fill=(255, 255, 255))
        return out


def touched(size, margin):
    mask = np.zeros((size[1], size[0]), bool)
    for x, y in SQUARES.values():
        mask[max(0, y - margin):y + 10 + margin, max(0, x - margin):x + 10 + margin] = True
    return mask


@pytest.mark.parametrize("preserve", [False, True])
def test_detail_preservation_keeps_untouched_pixels_over_five_edits(preserve):
    original = textured()
    strategy = StepStrategy(preserve_details=preserve)
    t = agent([think(name) for name in SQUARES] + [think(STOP)], DriftEditor(), strategy).run(original, "x")
    assert t.stop_reason == "stop" and len(t.edits) == 5
    final = np.asarray(t.final_image)
    untouched = ~touched(original.size, margin=strategy.preserve_radius + 2 * strategy.preserve_feather + 1)
    diff = np.abs(final.astype(int) - np.asarray(original, dtype=int))[untouched]
    fidelity = region_fidelity(original, t.final_image, untouched)
    for x, y in SQUARES.values():  # every edit is kept
        assert (final[y + 1:y + 9, x + 1:x + 9] >= 230).all()
    if preserve:
        assert diff.max() == 0 and fidelity["psnr"] == float("inf") and fidelity["ssim"] > 0.999
        assert all(0 < c["changed_fraction"] < 0.1 for s in t.steps[:5] for c in s.candidates)
    else:
        assert diff.mean() > 2 and fidelity["psnr"] < 40 and fidelity["ssim"] < 0.99


def test_change_mask_ignores_noise_and_thin_edges_and_finds_the_edit():
    before = textured(seed=1)
    after = DriftEditor().edit(before, "square 2", seed=3)
    mask = change_mask(before, after)
    x, y = SQUARES["square 2"]
    assert mask[y:y + 10, x:x + 10].mean() > 0.9 and mask.sum() < 10 * 10 * 1.5
    line = before.copy()
    ImageDraw.Draw(line).line([0, 30, 79, 30], fill=(255, 255, 255), width=1)  # a 1-px re-rendered edge
    assert not change_mask(before, line).any()


def test_preserve_details_returns_the_previous_size_and_copies_when_nothing_changed():
    before = textured()
    same, fraction = preserve_details(before, before)
    assert fraction == 0 and same.tobytes() == before.tobytes() and same is not before
    bigger = DriftEditor().edit(before, "square 0", seed=0).resize((160, 128))
    out, fraction = preserve_details(before, bigger)
    assert out.size == before.size and 0 < fraction < 0.1
    assert np.asarray(out)[60:, 60:].tobytes() == np.asarray(before)[60:, 60:].tobytes()
