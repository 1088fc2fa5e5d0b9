"""The benchmarks' agent: a `SimulatedAgent` in its own process, driven through stdin.

Prints its URL (``ws://127.0.0.1:PORT/ws``) on the first line of stdout, then answers one
line per command read on stdin:

- ``stats``: a JSON object: open_connections, connections_accepted, registrations,
  tasks_received, cpu (this process's CPU seconds so far);
- ``drop``: close every open connection's socket at once, without a close frame (a network
  failure, as clients see it: code 1006); answers ``{"dropped": N, "seconds": …}``;
- ``quit`` (or end of input): exit.

It answers tasks inline (duration 0) unless a task's data asks for ``sim_duration``, does
not record frames, and accepts any device id. Run by the benchmarks; standalone:
``.venv/bin/python benchmarks/agent_server.py`` then type ``stats``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from functools import partial

import trio
from _common import cpu_seconds, raise_nofile_limit

from galaxy_actors.testing import SimulatedAgent


async def serve(backlog: int) -> None:
    agent = SimulatedAgent(record_frames=False, handshake_timeout=30.0)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(agent.serve_websocket, "127.0.0.1", 0, backlog=backlog))
        print(url, flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        pending = ""
        while True:
            data = await stdin.receive_some(65536)
            if not data:
                break
            pending += data.decode()
            *lines, pending = pending.split("\n")
            for line in lines:
                command = line.strip()
                if command == "quit":
                    nursery.cancel_scope.cancel()
                    return
                if command == "stats":
                    answer: dict[str, object] = {
                        "open_connections": agent.open_connections,
                        "connections_accepted": agent.connections_accepted,
                        "registrations": agent.registrations,
                        "tasks_received": agent.tasks_received,
                        "cpu": cpu_seconds(),
                    }
                elif command == "drop":
                    # drop_connections closes every socket in one step before it yields.
                    start = time.perf_counter()
                    count = agent.open_connections
                    await agent.drop_connections()
                    answer = {"dropped": count, "seconds": time.perf_counter() - start}
                elif command:
                    answer = {"error": f"unknown command {command!r}"}
                else:
                    continue
                print(json.dumps(answer), flush=True)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backlog",
        type=int,
        default=4096,
        help="TCP listen backlog (the kernel caps it at net.core.somaxconn)",
    )
    args = parser.parse_args()
    raise_nofile_limit()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.backlog)


if __name__ == "__main__":
    main()
