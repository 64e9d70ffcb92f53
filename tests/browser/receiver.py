"""A real local receiver for the browser tests: answers per path, on 127.0.0.1:0."""
import http.server
import sys

ANSWERS = {
    "/ok": (200, "accepted: thanks"),
    "/fail": (500, "receiver broke"),
    "/xss": (200, "<img src=x onerror=alert(1)>"),
    # One long unbroken word, as some receivers answer (a token, a base64 blob).
    "/long": (200, "accepted_" + "0123456789abcdef" * 150),
}
# /flaky answers 503 until someone asks /flaky/up: a receiver that comes back after an
# outage, for bulk replay.
FLAKY = {"down": True}


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0]
        if path == "/flaky/up":
            FLAKY["down"] = False
            status, body = 200, "flaky is up"
        elif path == "/flaky":
            status, body = (503, "down for maintenance") if FLAKY["down"] else (200, "back: thanks")
        else:
            status, body = ANSWERS.get(path, (404, "no such path"))
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"receiver on http://127.0.0.1:{server.server_address[1]}", flush=True)
sys.stdout.flush()
server.serve_forever()
