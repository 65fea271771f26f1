"""A real room for the teacher's guide: three participants assigned β 0, 0.05 and 0.2 take the Workshop page's step 4
as assigned runs (the page's own engine calls), the room's queue trains their three PPO runs side by side in one
group, and Chromium takes the screenshots of the teacher's Room page and the projector's frontier (docs/room.md).

Run by hand (about 12 minutes on 2 CPU cores):

    .venv/bin/python benchmarks/room_demo.py --out /tmp/room-demo --reward /tmp/room-bench/runs/workshop-rm \
        --screenshots docs

``--reward``: a workshop reward model (the Workshop page's step 3; benchmarks/room_side_by_side.py trains one), copied
into each participant's workspace: each trained on the same shipped pairs with the same seed would be this one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench import machine  # noqa: E402

from rlhf_engine.data.pairs import read_pairs  # noqa: E402
from rlhf_engine.lab import workshop  # noqa: E402
from rlhf_engine.lab.sweep_job import prepare_sweep  # noqa: E402
from rlhf_engine.room.room import TEACHER, Room  # noqa: E402
from rlhf_engine.room.scheduler import room_job, room_queue  # noqa: E402
from rlhf_engine.runs.runfolder import RunFolder  # noqa: E402
from rlhf_engine.runs.workspace import default_model_config  # noqa: E402

PEOPLE = ("Ana", "Bo", "Chen")
BETAS = (0.0, 0.05, 0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder: the room")
    parser.add_argument("--reward", type=Path, required=True, help="a trained workshop reward-model run folder")
    parser.add_argument("--screenshots", type=Path, help="folder for room-teacher.png and room-projector.png")
    parser.add_argument("--best-of-n", action="store_true",
                        help="also the best-of-n baseline, in the first participant's sweep (the room draws one)")
    args = parser.parse_args()
    room = Room.open(args.out)
    people = [room.join(name) for name in PEOPLE]
    room.assign(list(BETAS), ["ppo"])
    model, sizes = default_model_config(), workshop.preset("cpu")
    queue = room_queue(room)
    start = time.monotonic()
    for person in people:
        ws = room.workspace(person.id).ensure()
        ws.save_model_config(model)  # the Workshop page's steps 1 and 2, as a participant clicks them
        ws.store().add_many(read_pairs(workshop.PAIRS_FILE), source=workshop.PAIRS_SOURCE)
        reward = ws.runs / "workshop-rm"
        shutil.copytree(args.reward, reward)
        beta = room.assignment(person.id)["kl_coef"]
        jobs = prepare_sweep(ws.runs / "workshop-sweep", workshop.ppo_config(model, sizes), reward, "kl_coef", [beta],
                             best_of_n=sizes.best_of_n if args.best_of_n and person is people[0] else 0,
                             best_of_n_prompts=sizes.best_of_n_prompts, batched=False)
        for job in jobs:
            queue.submit(room_job(room, job.run), owner=person.id)
    groups = {str(job.group.run.path) for job in queue.jobs() if hasattr(job, "group")}
    print(f"{len(queue.jobs())} jobs queued; the policy runs in {len(groups)} group(s)", flush=True)
    assert queue.wait_idle(3600)
    wall = time.monotonic() - start
    rows = []
    for person in people:
        for run in room.workspace(person.id).runs_of("ppo"):
            status, last = run.status(), RunFolder(run.path).metrics()[-1]
            rows.append({"who": person.name, "run": run.id, "state": status["state"], "beta": last.get("beta"),
                         "kl": last.get("objective/kl"), "score": last.get("objective/scores")})
    print(json.dumps({"wall_s": round(wall, 1), "machine": machine(), "runs": rows}, indent=2))
    if args.screenshots:
        screenshots(room, args.screenshots)
    return 0


def screenshots(room: Room, folder: Path) -> None:
    from browser import chromium_page, dashboard_server, open_page, screenshot

    from rlhf_engine.room.links import room_links

    with dashboard_server(room.workspace(TEACHER).ensure().root, folder / "room-demo-server.log",
                          env={"RLHF_ROOM": str(room.folder), "RLHF_ROOM_URL": "http://192.168.1.20:8501"}) as url, \
            chromium_page() as page:
        links = room_links(room, url)
        open_page(page, links["projector"])
        screenshot(page, folder / "room-projector.png")
        open_page(page, links["teacher"])
        screenshot(page, folder / "room-teacher.png")
    (folder / "room-demo-server.log").unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
