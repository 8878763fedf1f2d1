"""GRPO rewards on the toy colour world: the strict format reward and the executed-edit reward (editor + judge)."""

from __future__ import annotations

import pytest
from train_support import COLORS, ColorEditor, ColorJudge, image

from mira.editors.base import EditorError
from mira.judges.base import JudgeScores
from mira.protocol import STOP, format_completion
from mira.train.rewards import EditEnvironment, EditReward, format_reward, trajectory_reward


def as_message(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_format_reward_is_strict_and_reads_both_completion_forms():
    good, stop = format_completion("make the cup red", "white cup"), format_completion(STOP, "done")
    bad = ["make the cup red", "<think>x</think>make the cup red", "<answer>make the cup red</answer>",
           "<think></think><answer>make it red</answer>", good + " and more", "<think>x</think><answer>STOP</answer>x"]
    assert format_reward([None] * 2, [good, as_message(stop)]) == [1.0, 1.0]
    assert format_reward([None] * len(bad), [as_message(b) for b in bad]) == [0.0] * len(bad)
    content_parts = [{"role": "assistant", "content": [{"type": "text", "text": good}]}]
    assert format_reward([None], [content_parts]) == [1.0]


def columns(n: int, current=None, history=()):
    start, done = image(), current if current is not None else image()
    return {"images": [[start, done] for _ in range(n)], "instruction": ["make the cup red"] * n,
            "history": [list(history)] * n}


def test_edit_reward_scores_progress_and_stop():
    editor, judge = ColorEditor(), ColorJudge()
    reward = EditReward(EditEnvironment(editor, judge, seed=1))
    texts = [format_completion("make the cup red", "r"), format_completion("make the cup blue", "r"),
             format_completion(STOP, "r"), "garbage without an answer <think>", format_completion("make the cup red")]
    logged = {}
    out = reward([None] * 5, [as_message(t) for t in texts], **columns(5),
                 log_metric=lambda name, value: logged.__setitem__(name, value))
    white = judge.score(image(), image(), "make the cup red").overall / 10
    assert out[0] == pytest.approx(1.0 - white)  # the right edit: from white to exactly red
    assert out[1] < out[0] and out[2] == pytest.approx(white)  # a wrong colour; stop keeps the white state's score
    assert out[3] == 0.0 and out[4] == out[0]
    assert editor.calls == 2  # two distinct (state, action) pairs among five completions
    assert logged["edit_reward/editor_calls"] == 2 and logged["edit_reward/stop_rate"] == pytest.approx(0.2)

    again = reward([None], [as_message(texts[0])], **columns(1))
    assert again == [out[0]] and editor.calls == 2  # cached per (state, action)

    done = reward([None] * 2, [as_message(format_completion(STOP, "r")), as_message(texts[0])],
                  **columns(2, current=image(COLORS["red"]), history=["make the cup red"]))
    assert done[0] == pytest.approx(1.0) and done[1] == 0.0  # stop when done; a repeated edit is not executed
    assert editor.calls == 2


def test_edit_seeds_are_deterministic_per_state_and_action():
    env = EditEnvironment(ColorEditor(), ColorJudge(), seed=5)
    state = env.key(image())
    assert env.edit_seed(state, "Make the cup red.") == env.edit_seed(state, "make the cup red")
    assert env.edit_seed(state, "make the cup red") != env.edit_seed(state, "make the cup blue")
    assert EditEnvironment(ColorEditor(), ColorJudge(), seed=6).edit_seed(state, "x") != env.edit_seed(state, "x")


class FlakyEditor(ColorEditor):
    def edit(self, image, instruction, *, seed=None):
        if "blue" in instruction or "always" in instruction:
            raise EditorError("CUDA out of memory")
        return super().edit(image, instruction, seed=seed)


class SilentJudge(ColorJudge):
    def score(self, source, edited, instruction):
        return JudgeScores(error="unparseable reply") if "green" in instruction else super().score(
            source, edited, instruction)


def test_failed_calls_are_unscored_and_a_dead_backend_stops_training():
    reward = EditReward(EditEnvironment(FlakyEditor(), ColorJudge()))
    out = reward([None] * 2, [as_message(format_completion(a, "r")) for a in ("make the cup red", "make it blue")],
                 **columns(2))
    assert out[0] > 0 and out[1] is None
    with pytest.raises(EditorError, match="every edit call of this batch failed"):
        reward([None], [as_message(format_completion("always fail", "r"))], **columns(1))

    judged = EditReward(EditEnvironment(ColorEditor(), SilentJudge()))
    with pytest.raises(EditorError, match="every judge call .* unparseable reply"):
        judged([None], [as_message(format_completion(STOP, "r"))], **dict(columns(1), instruction=["make it green"]))


def test_concurrent_calls_give_the_same_rewards():
    texts = [as_message(format_completion(f"make the cup {c}", "r")) for c in COLORS]
    serial = EditReward(EditEnvironment(ColorEditor(), ColorJudge()))([None] * 4, texts, **columns(4))
    env = EditEnvironment(ColorEditor(), ColorJudge(), editor_workers=3, judge_workers=2)
    assert EditReward(env)([None] * 4, texts, **columns(4)) == serial
    env.close()


def test_trajectory_reward_passes_the_rollout_scores_through():
    logged = {}
    out = trajectory_reward([None] * 2, ["a", "b"], trajectory_score=[0.5, None], rollout_edits=[1, 3],
                            log_metric=lambda name, value: logged.__setitem__(name, value))
    assert out == [0.5, None] and logged["trajectory/mean_edits"] == 2
    with pytest.raises(ValueError, match="rollout='trajectory'"):
        trajectory_reward([None], ["a"])


def test_trajectory_rollouts_follow_the_agents_stop_rules():
    from mira.train.grpo import TrajectoryRollout, _Rollout

    editor = ColorEditor()
    rollout = TrajectoryRollout(EditEnvironment(editor, ColorJudge()), max_steps=2)
    runs = [_Rollout("make the cup red", [], image(), image()) for _ in range(5)]
    red, blue = format_completion("make the cup red", "r"), format_completion("make the cup blue", "r")
    rollout._advance(runs, [red, format_completion(STOP, "r"), "<think>never closed", blue, red])
    assert [r.done for r in runs] == [False, True, True, False, False]
    assert [r.edits for r in runs] == [1, 0, 0, 1, 1] and editor.calls == 2  # one red edit shared by two runs
    active = [runs[0], runs[3], runs[4]]
    rollout._advance(active, [red, red, format_completion(STOP, "r")])
    assert all(r.done for r in runs)
    assert runs[0].history == ["make the cup red"]  # the repeated edit was not executed
    assert runs[3].history == ["make the cup blue", "make the cup red"] and runs[3].edits == 2  # max_steps reached
    assert runs[3].current.getpixel((0, 0)) == COLORS["red"] and runs[4].edits == 1
