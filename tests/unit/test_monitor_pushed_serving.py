"""The monitor hears a new champion from the control plane's push (its long poll), and reads the committed table
while no push arrives."""

import asyncio

from mlray.lake import Lake
from mlray.lake.state import SERVING_STATE, StateTable
from mlray.monitor.serving import PushedServing, ServingTable
from mlray.serve.routing import TrafficPlan


class Watch:
    """The control plane's `watch` as a Ray handle offers it: `watch.remote(known)` awaitable; each call answers the
    next pushed state, then blocks (a long poll with nothing new)."""

    def __init__(self, pushes, fail_first=0):
        self.pushes, self.fail_first, self.known = list(pushes), fail_first, []

    def remote(self, known):
        self.known.append(known)

        async def answer():
            if self.fail_first:
                self.fail_first -= 1
                raise ConnectionError("the control plane is restarting")
            if not self.pushes:
                await asyncio.sleep(3600)
            return self.pushes.pop(0)

        return answer()


class Owner:
    def __init__(self, watch):
        self.watch = watch


def state(revision, champion, rollout=None):
    return {"revision": revision, "plan": TrafficPlan.only(champion).to_dict(), "rollout": rollout, "aliases": None}


def test_a_pushed_champion_replaces_the_tables_and_each_poll_names_the_revision_it_saw(project):
    table = StateTable(Lake.from_platform(project.platform), SERVING_STATE)
    table.write({"plan": TrafficPlan.only("1").to_dict()}, 0)
    watch = Watch([state(2, "1"), state(3, "4", rollout={"status": "running", "challenger": "5"})])
    serving = PushedServing(project, ServingTable(project, Lake.from_platform(project.platform)), lambda: Owner(watch))
    assert serving.champion() == "1"  # before any push: the committed table

    async def listen():
        follower = asyncio.create_task(serving.follow())
        while len(watch.known) < 3:
            await asyncio.sleep(0.01)
        follower.cancel()

    asyncio.run(listen())
    assert serving.champion() == "4" and serving.rollout()["challenger"] == "5"
    assert watch.known == [-1, 2, 3]  # every poll says what it has: the next push is only a newer revision


def test_while_the_control_plane_is_unreachable_the_table_answers(project):
    table = StateTable(Lake.from_platform(project.platform), SERVING_STATE)
    table.write({"plan": TrafficPlan.only("2").to_dict()}, 0)
    watch = Watch([], fail_first=1)
    serving = PushedServing(project, ServingTable(project, Lake.from_platform(project.platform)), lambda: Owner(watch))
    serving.state = state(7, "9")  # an old push

    async def listen():
        follower = asyncio.create_task(serving.follow())
        while not watch.known:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        follower.cancel()

    asyncio.run(listen())
    assert serving.state is None and serving.champion() == "2"
