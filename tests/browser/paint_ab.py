"""The logs page's paint time with 100 entries, two server builds side by side (A/B).

    ~/.cache/postback-tools/venv/bin/python tests/browser/paint_ab.py OLD_BINARY NEW_BINARY [ROUNDS]

Starts both servers (ALLOW_PRIVATE_TARGETS, a fresh data dir each) and the test receiver,
gives each one postback and 100 conversions, then in one headless Chromium loads
`/console#/logs`, sets 100 per page and presses Apply, alternating A and B for ROUNDS
rounds (default 8), and prints each build's `data-painted-ms` (request → rows laid out
and painted, the page's own measure; see test_hundred_entries_render_fast) as median,
min and max, and the median of `data-total-ms` (request → rows built). Alternating in one sitting keeps the machine's load the same for both.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

HERE = os.path.dirname(os.path.abspath(__file__))
KEY, INGEST = "ab-admin-key-0123456789", "ab-ingest-key-0123456789"


def read_line(proc, prefix):
    for _ in range(600):
        line = proc.stdout.readline().decode()
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise SystemExit(f"no '{prefix}' line")


def call(base, method, path, body, key):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    req.add_header("x-api-key", key)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def server(binary, receiver):
    env = dict(os.environ, PORT="0", DATA_DIR=tempfile.mkdtemp(prefix="paint-ab-"), ADMIN_API_KEY=KEY,
               INGEST_API_KEY=INGEST, ALLOW_PRIVATE_TARGETS="true", RUST_LOG="warn")
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    base = read_line(proc, "listening on ")
    call(base, "POST", "/postbacks", {"name": "Paint A/B", "type": "conversion", "url": f"{receiver}/ok?t={{transaction_id}}"}, KEY)
    events = [{"type": "conversion", "transaction_id": f"T-ab-{i}", "offer_id": "o1", "publisher_id": "p1", "payout": "1"}
              for i in range(100)]
    call(base, "POST", "/events", {"events": events}, INGEST)
    for _ in range(300):
        if len(call(base, "GET", "/logs?limit=100", None, KEY)["items"]) == 100:
            return proc, base
        time.sleep(0.1)
    raise SystemExit("100 entries never logged")


def main():
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    receiver_proc = subprocess.Popen([sys.executable, os.path.join(HERE, "receiver.py")], stdout=subprocess.PIPE)
    receiver = read_line(receiver_proc, "receiver on ")
    procs = [receiver_proc]
    try:
        builds = {}
        for name, binary in (("A", old), ("B", new)):
            proc, base = server(binary, receiver)
            procs.append(proc)
            builds[name] = base
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                    f"--user-data-dir={tempfile.mkdtemp(prefix='paint-ab-chromium-')}"]:
            opts.add_argument(arg)
        d = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
        wait = WebDriverWait(d, 20)
        times = {"A": [], "B": []}
        fetched = {"A": [], "B": []}
        try:
            for _ in range(rounds):
                for name, base in builds.items():
                    d.get(f"{base}/console")
                    d.execute_script(f"sessionStorage.setItem('postback-admin-key', '{KEY}')")
                    d.get(f"{base}/console?r={time.time()}#/logs")
                    wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "#logs"))
                    Select(d.find_element(By.ID, "limit")).select_by_value("100")
                    d.find_element(By.ID, "apply").click()
                    wait.until(lambda _: d.find_element(By.ID, "log-table").get_attribute("data-count") == "100"
                               and d.find_element(By.ID, "log-table").get_attribute("data-painted-ms"))
                    table = d.find_element(By.ID, "log-table")
                    times[name].append(float(table.get_attribute("data-painted-ms")))
                    fetched[name].append(float(table.get_attribute("data-total-ms")))
        finally:
            d.quit()
        for name, label in (("A", old), ("B", new)):
            t, f = times[name], fetched[name]
            print(f"{name} {label}: painted in median {statistics.median(t):.1f} ms (min {min(t):.1f}, max {max(t):.1f}, "
                  f"{len(t)} runs: {' '.join(f'{x:.0f}' for x in t)}); fetched and built in median "
                  f"{statistics.median(f):.1f} ms")
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
