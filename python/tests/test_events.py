"""Events stream to `serve` as JSON lines (a stand-in server here; test_serve.py runs the real one); an unreachable
`serve` does not stop the job, and it says so once."""

import json
import socket
import threading

import hybridshard
from conftest import TINY, free_port, rl_iteration


class LineServer:
    """Accepts connections on 127.0.0.1 and keeps every line received."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.lines = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        connection, _ = self.sock.accept()
        with connection, connection.makefile("r") as stream:
            for line in stream:
                self.lines.append(json.loads(line))
                if len(self.lines) == 1:  # the hello is answered (docs/record-format.md, "The event stream")
                    connection.sendall(b'{"type":"welcome"}\n')

    def close(self):
        self.thread.join(10)
        self.sock.close()


def test_phases_and_memory_reach_the_event_stream():
    server = LineServer()
    engine = hybridshard.Engine(model=TINY, world_size=1, rank=0, serve=server.address, job_name="py-events")
    rl_iteration(engine)
    engine.close()
    del engine  # closes the stream
    server.close()
    events = [event for event in server.lines if event["type"] != "heartbeat"]
    hello = events[0]
    assert (hello["type"], hello["rank"], hello["job"], hello["world_size"]) == ("hello", 0, "py-events", 1)
    assert hello["instance"].startswith("store:127.0.0.1:")
    assert events[1]["type"] == "job" and events[1]["world_size"] == 1  # rank 0 describes the job first
    assert events[2]["type"] == "rank_up"
    phases = [(e["type"], e["phase"], e["iteration"]) for e in events if e["type"] in ("phase_begin", "phase_end")]
    assert phases == [
        ("phase_begin", "init", -1), ("phase_end", "init", -1),
        ("phase_begin", "train", 0), ("phase_end", "train", 0),
        ("phase_begin", "enter", 0), ("phase_end", "enter", 0),
        ("phase_begin", "rollout", 0), ("phase_end", "rollout", 0),
        ("phase_begin", "exit", 0), ("phase_end", "exit", 0),
    ]
    assert any(e["type"] == "transfer" for e in events)
    assert any(e["type"] == "memory" for e in events)
    assert {e.get("buffer") for e in events if e["type"] == "residency"} >= {"rollout.params", "train.params.pp0.vpp0"}


def test_unreachable_serve_is_reported_once_and_the_job_goes_on(capfd):
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    engine = hybridshard.Engine(model=TINY, world_size=1, rank=0, serve=closed, serve_timeout=0.3)
    for _ in range(2):
        weights = engine.enter()
        del weights
        engine.exit()
    engine.close()
    err = capfd.readouterr().err
    assert err.count("the job goes on without reporting its events") == 1, err
    assert closed in err and "[rank 0] warning:" in err
