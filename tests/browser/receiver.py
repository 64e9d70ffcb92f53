"""A real local receiver for the browser tests: answers per path, on 127.0.0.1:0."""
import http.server
import sys

ANSWERS = {
    "/ok": (200, "accepted: thanks"),
    "/fail": (500, "receiver broke"),
    "/xss": (200, "<img src=x onerror=alert(1)>"),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status, body = ANSWERS.get(self.path.split("?")[0], (404, "no such path"))
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
