"""Shares of the local server's CPU by step of a delivered firing, from folded perf stacks
(scripts/profile.sh). Each stack goes to the first rule that matches it, most specific
first; the writer thread ("embedded-store-…") and the tokio threads have their own rules.
JSON encoding and allocation are cross-cutting, so they are reported apart ("of which").
The counts perf gives for the software cpu-clock event (this VM has no PMU) are
nanoseconds of CPU, so each row also shows the seconds of CPU it took over the run:
two runs of the same load (same firings) compare row by row in absolute terms.

    python3 scripts/profile_shares.py target-profile/delivery.folded
"""

import re
import sys
from collections import Counter

WRITER = [
    ("writer: fsync (commit durability)", r"fsync|full_fsync"),
    ("writer: WAL checkpoint", r"sqlite3WalCheckpoint|sqlite3Checkpoint"),
    ("writer: log entry insert (+ its indexes)", r"LogRow::insert|embedded::logs::"),
    ("writer: lease (receive_due)", r"receive_due"),
    ("writer: firing insert (ingest enqueue)", r"insert_firing"),
    ("writer: touches / dedupe keys (ingest)", r"embedded::touches"),
    ("writer: breaker, held firings", r"embedded::control"),
    ("writer: ack / retry", r"embedded::queue::"),
    ("writer: transaction, pager, other SQL", r"."),
]
WORKER = [
    ("reads: delivered check, status re-read (blocking pool)", r"embedded::readers|spawn_blocking"),
    ("send: HTTP client (request + response)", r"hyper_util::client|reqwest|ReqwestSender|HttpSender|hyper::client"),
    ("render + redact + log entry build", r"domain::render|redact|Dispatcher::entry|base_entry|LogRow::new|domain::template"),
    ("ingest: HTTP server, parse, match", r"post_events|require_ingest|access_log|events_body|service::ingest|matching"),
    ("dispatch loop + task scheduling", r"queue_loop|run_queue_loop|Dispatcher::attempt|Dispatcher::process|service::control"),
    ("tokio runtime: park, wake, timers", r"tokio::runtime|park|futex|epoll"),
    ("other (kernel networking, libc)", r"."),
]


def main(path: str) -> None:
    shares, cross, total = Counter(), Counter(), 0
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        n = int(count)
        total += n
        rules = WRITER if stack.startswith("embedded-store") else WORKER
        shares[next(name for name, rx in rules if re.search(rx, stack))] += n
        if "serde_json" in stack:
            cross["JSON encoding/decoding (serde_json), anywhere"] += n
        if re.search(r"malloc|free|realloc|_int_", stack.rsplit(";", 1)[-1]):
            cross["allocation (malloc/free as the leaf)"] += n
    writer = sum(v for k, v in shares.items() if k.startswith("writer"))
    print("| step | share of server CPU | CPU over the run (s) |\n|---|---|---|")
    for name, n in shares.most_common():
        print(f"| {name} | {100 * n / total:.1f}% | {n / 1e9:.2f} |")
    print(f"| **the writer thread in all** | **{100 * writer / total:.1f}%** | {writer / 1e9:.2f} |")
    for name, n in cross.most_common():
        print(f"| of which, across the rows: {name} | {100 * n / total:.1f}% | {n / 1e9:.2f} |")
    print(f"| **all** | 100% | **{total / 1e9:.2f}** |")


if __name__ == "__main__":
    main(sys.argv[1])
