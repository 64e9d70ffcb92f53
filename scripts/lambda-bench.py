#!/usr/bin/env python3
"""A minimal Lambda Runtime API on 127.0.0.1 that times Lambda bootstraps.

For each run it starts the bootstrap with AWS_LAMBDA_RUNTIME_API pointing here and
measures:
  init   spawn -> the bootstrap's first GET /2018-06-01/runtime/invocation/next
         (everything done before the handler can run: process start, settings, SDK
         clients, HTTP client, app)
  first  that /next answered with the event -> the invocation's response POST
         (the first, cold invocation, against the local emulators)
  warm   the median of the next invocations of the same event
Then it kills the bootstrap (by its PID) and starts the next run.

usage: lambda-bench.py --runs N --invokes K NAME=BINARY=EVENT_FILE [...]
EVENT_FILE may be `-` for `{}`. Prints one JSON object per bootstrap on stdout.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NEXT = "/2018-06-01/runtime/invocation/next"


class Run:
    """The state of one bootstrap run, shared with the request handler."""

    def __init__(self, event: bytes, invokes: int):
        self.event = event
        self.invokes = invokes
        self.lock = threading.Lock()
        self.served = 0
        self.next_times = []  # perf_counter of each /next that was answered
        self.done_times = []  # perf_counter of each response/error POST
        self.errors = []
        self.finished = threading.Event()  # all invocations answered
        self.release = threading.Event()  # lets a parked /next go when the run ends


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lambda-bench"

    def log_message(self, *args):
        pass

    def _reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        run = self.server.run
        now = time.perf_counter()
        if self.path != NEXT or run is None:
            return self._reply(404)
        with run.lock:
            index = run.served
            if index < run.invokes:
                run.served += 1
                run.next_times.append(now)
        if index >= run.invokes:
            # No more work: park the bootstrap until the run is over.
            run.release.wait(30)
            return self._reply(503)
        deadline = int((time.time() + 60) * 1000)
        self._reply(
            200,
            run.event,
            [
                ("Content-Type", "application/json"),
                ("Lambda-Runtime-Aws-Request-Id", f"req-{index}"),
                ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench"),
                ("Lambda-Runtime-Trace-Id", "Root=1-5e9f0c65-1de4d666d4dd26aced652b6c;Parent=1;Sampled=0"),
            ],
        )

    def do_POST(self):
        run = self.server.run
        now = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if run is not None and "/runtime/invocation/" in self.path:
            with run.lock:
                run.done_times.append(now)
                if self.path.endswith("/error"):
                    run.errors.append(body.decode(errors="replace")[:300])
                if len(run.done_times) >= run.invokes:
                    run.finished.set()
        elif run is not None and self.path.endswith("/init/error"):
            with run.lock:
                run.errors.append("init error: " + body.decode(errors="replace")[:300])
                run.finished.set()
        self._reply(202, b"{}", [("Content-Type", "application/json")])


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a killed bootstrap's connection breaking is expected


def one_run(binary, event, invokes, env):
    # A fresh Runtime API server (and port) per run: a request the previous, killed
    # bootstrap still had in flight can never be counted in this run.
    run = Run(event, invokes)
    server = Server(("127.0.0.1", 0), Handler)
    server.run = run
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}")
    started = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = started + 60
        while not run.finished.wait(0.02):
            if proc.poll() is not None:
                raise SystemExit(f"{binary} exited ({proc.returncode}): {proc.stderr.read().decode(errors='replace')[-2000:]}")
            if time.perf_counter() > deadline:
                raise SystemExit(f"{binary}: no {invokes} invocations within 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate()
        run.release.set()
        server.shutdown()
        server.server_close()
    if run.errors:
        raise SystemExit(f"{binary}: {run.errors[0]}\n{stderr.decode(errors='replace')[-2000:]}")
    init = run.next_times[0] - started
    first = run.done_times[0] - run.next_times[0]
    warm = [done - nxt for nxt, done in zip(run.next_times[1:], run.done_times[1:])]
    return init, first, warm


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--invokes", type=int, default=11)
    parser.add_argument("targets", nargs="+", help="NAME=BINARY=EVENT_FILE")
    args = parser.parse_args()

    env = dict(os.environ)
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "bench",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
            "RUST_LOG": "warn",
        }
    )

    for target in args.targets:
        name, binary, event_file = target.split("=", 2)
        event = b"{}" if event_file == "-" else open(event_file, "rb").read()
        one_run(binary, event, args.invokes, env)  # warm the page cache
        inits, firsts, warms = [], [], []
        for _ in range(args.runs):
            init, first, warm = one_run(binary, event, args.invokes, env)
            inits.append(init)
            firsts.append(first)
            warms.extend(warm)
        ms = lambda xs: round(statistics.median(xs) * 1000, 2)
        print(
            json.dumps(
                {
                    "name": name,
                    "size_bytes": os.path.getsize(binary),
                    "runs": args.runs,
                    "init_ms_median": ms(inits),
                    "init_ms_min": round(min(inits) * 1000, 2),
                    "init_ms_max": round(max(inits) * 1000, 2),
                    "first_invoke_ms_median": ms(firsts),
                    "warm_invoke_ms_median": ms(warms) if warms else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
