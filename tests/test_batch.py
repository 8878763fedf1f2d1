"""mira.batch: many trajectories at once over served backends (real loopback servers)."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from mira.agent import MiraAgent
from mira.batch import BatchItem, arun_many, run_many
from mira.editors.remote import HTTPEditor
from mira.images import InputError
from mira.policies.openai import OpenAIPolicy
from mira.testing_servers import plan_responder
from mira.trajectory import Trajectory


def photo(i: int) -> Image.Image:
    return Image.new("RGB", (32, 32), (i * 20 % 256, 100, 150))


@pytest.fixture
def agent(chat_server, editor_server):
    chat_server.responder = plan_responder(["make the sky blue", "make the car red"])
    chat_server.latency = 0.05
    policy = OpenAIPolicy("m", base_url=chat_server.base_url, backoff=0.01)
    return MiraAgent(policy=policy, editor=HTTPEditor(editor_server.url), max_steps=5)


def test_results_in_order_with_bounded_concurrency(agent, chat_server):
    chat_server.latency = 0.2  # long enough for the four first decisions to overlap on a busy machine
    items = [BatchItem(photo(i), f"instruction number {i}") for i in range(8)]
    done = []
    results = run_many(agent, items, concurrency=4, on_result=lambda i, r: done.append(i))
    assert [r.instruction for r in results] == [f"instruction number {i}" for i in range(8)]
    assert all(r.stop_reason == "stop" and r.edits == ["make the sky blue", "make the car red"] for r in results)
    assert sorted(done) == list(range(8))
    assert chat_server.max_in_flight == 4  # four trajectories waited on the policy at once, never more


def test_run_folders_and_resume(agent, chat_server, tmp_path):
    items = [(photo(1), "first"), {"image": photo(2), "instruction": "second", "id": "b"}]
    results = run_many(agent, items, concurrency=2, run_root=tmp_path)
    assert (tmp_path / "00000" / "trajectory.json").exists() and (tmp_path / "b" / "final.png").exists()
    assert Trajectory.load(tmp_path / "b").id == results[1].id

    n = len(chat_server.chat_requests)
    again = run_many(agent, items, concurrency=2, run_root=tmp_path, resume=True)
    assert len(chat_server.chat_requests) == n  # nothing was run again
    assert [t.id for t in again] == [t.id for t in results]
    assert again[1].final_image.tobytes() == results[1].final_image.tobytes()

    (tmp_path / "b" / "trajectory.json").write_text("{half written")
    third = run_many(agent, items, concurrency=2, run_root=tmp_path, resume=True)
    assert third[0].id == results[0].id and third[1].id != results[1].id and third[1].stop_reason == "stop"


def test_bad_items(agent, tmp_path):
    items = [(photo(1), "fine"), (photo(2), "   "), (photo(3), "also fine")]
    with pytest.raises(InputError, match="instruction is empty"):
        run_many(agent, items, concurrency=2)
    results = run_many(agent, items, concurrency=2, return_exceptions=True)
    assert isinstance(results[1], InputError) and results[0].stop_reason == results[2].stop_reason == "stop"
    with pytest.raises(ValueError, match="used twice"):
        run_many(agent, [BatchItem(photo(1), "a", id="x"), BatchItem(photo(2), "b", id="x")], run_root=tmp_path)
    with pytest.raises(ValueError, match="cannot name a folder"):
        run_many(agent, [BatchItem(photo(1), "a", id="../up")], run_root=tmp_path)
    with pytest.raises(ValueError, match="concurrency"):
        run_many(agent, items, concurrency=0)


def test_item_overrides_and_async_api(agent):
    async def main():
        with pytest.raises(RuntimeError, match="await arun_many"):
            run_many(agent, [(photo(1), "x")])
        return await arun_many(agent, [BatchItem(photo(1), "x", seed=7, max_steps=1)], concurrency=3)

    [traj] = asyncio.run(main())
    assert traj.config["agent"]["seed"] == 7 and traj.stop_reason == "max_steps" and len(traj.steps) == 1


def test_aclose_clients_closes_the_running_loops_clients(agent):
    from mira.clients.retry import aclose_clients

    async def main():
        await arun_many(agent, [(photo(1), "x")])
        chat, editor = agent.policy.backend.clients.aio, agent.editor._aclients.get()
        assert not chat.is_closed() and not editor.is_closed
        await aclose_clients()
        assert chat.is_closed() and editor.is_closed
        assert agent.policy.backend.clients.aio is not chat  # a later call on this loop builds new clients
        return await arun_many(agent, [(photo(2), "y")])

    assert asyncio.run(main())[0].stop_reason == "stop"
