#!/usr/bin/python3
"""A SigV4-checking, fault-injecting HTTP proxy in front of s3rver, for cairn's S3 tests.

s3rver does not check request signatures. This proxy does, as S3 would: for every
request it recomputes the AWS Signature Version 4 with botocore's own signer
(S3SigV4Auth, Debian's python3-botocore) from the request's method, path, query, the
headers it names as signed, its x-amz-date and the known test credentials, and answers
403 SignatureDoesNotMatch (an S3 XML error, with the canonical request it computed) on
a mismatch. It also checks what S3 checks around the signature: a known access key, the
credential scope's date, region and service, a clock skew under 15 minutes,
x-amz-content-sha256 present (and equal to the body's SHA-256 unless UNSIGNED-PAYLOAD),
every x-amz-* header signed. A request that passes is forwarded to s3rver and its answer
streamed back.

Faults are injected on request, through a control endpoint (never signed, never
forwarded):

  POST   /__proxy/faults   a JSON fault, or a list of them, queued in order
  DELETE /__proxy/faults   drop every queued fault
  GET    /__proxy/log      JSON list of the requests seen: method, path, query, range,
                           status, fault, sig ("ok", "bad", "none"), t and t_end (start
                           and end, Unix seconds)
  DELETE /__proxy/log      clear it

A fault matches requests by optional "method", "path" (substring of the decoded path)
and "query" (substring of the raw query), lets the first "skip" of them through
(default 0), and applies to the next "count" of them (default 1; -1 until cleared). Its
"action" is one of:

  status        answer "status" (default 503) with S3 error "code" (default SlowDown)
                and "message", without forwarding
  cut_request   read "after_bytes" (default half) of the request body, then drop the
                connection without an answer
  cut_response  forward, send the answer's headers and "after_bytes" (default half) of its
                body, then close the connection (every byte sent arrives); with
                "reset": true, reset it instead (bytes still in flight are lost);
                "after_bytes": 0 sends nothing at all (an answer lost on the way)
  delay         wait "seconds" (default 2), then forward as usual (a slow server)
  stall         forward, then wait "seconds" (default 30) before answering, or after
                "after_bytes" of the body when given
  error_200     answer 200 with an S3 <Error> body ("code", default InternalError),
                without forwarding, as a CompleteMultipartUpload that failed after S3
                started its answer does
  raw           answer "status" (default 200) with "headers" and "body" (a string) as
                given, without forwarding; "body_repeat" repeats the body N times
  garbage       write "body" (default a line of noise) on the socket, no HTTP, and close

Usage: sigproxy.py --upstream HOST:PORT --key ID:SECRET [--key ...] [--region R]
                   [--listen HOST] [--port N]
Prints "listening PORT" on stdout once it serves.
"""

import argparse
import datetime
import hashlib
import hmac
import http.client
import http.server
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
import uuid

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "expect"}
MAX_SKEW = datetime.timedelta(minutes=15)
AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256\s+(.*)$")


class State:
    def __init__(self, keys, region, upstream):
        self.keys = keys
        self.region = region
        self.upstream = upstream
        self.lock = threading.Lock()
        self.faults = []
        self.log = []
        self.stop = threading.Event()

    def take_fault(self, method, path, query):
        with self.lock:
            for f in self.faults:
                if f.get("method") and f["method"] != method:
                    continue
                if f.get("path") and f["path"] not in path:
                    continue
                if f.get("query") and f["query"] not in query:
                    continue
                if f.get("skip", 0) > 0:
                    f["skip"] -= 1
                    continue
                count = f.get("count", 1)
                if count > 0:
                    f["count"] = count - 1
                    if f["count"] == 0:
                        self.faults.remove(f)
                return dict(f)
        return None

    def record(self, entry):
        with self.lock:
            self.log.append(entry)
            if len(self.log) > 100000:
                del self.log[:50000]


def s3_error_xml(code, message, **detail):
    def esc(s):
        return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    extra = "".join("<%s>%s</%s>" % (k, esc(v), k) for k, v in detail.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s'
            '</Message>%s<RequestId>%s</RequestId></Error>'
            % (code, esc(message), extra, uuid.uuid4().hex[:16].upper())).encode()


class SigError(Exception):
    def __init__(self, status, code, message, **detail):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class Verifier(S3SigV4Auth):
    """botocore's S3 signer, limited to the headers the request says it signed."""

    def __init__(self, credentials, region, signed_names):
        super().__init__(credentials, "s3", region)
        self.signed_names = signed_names

    def headers_to_sign(self, request):
        hm = HTTPHeaders()
        for name in self.signed_names:
            for v in request.headers.get_all(name) or [""]:
                hm[name] = v
        return hm


def verify(state, method, raw_path, headers):
    """Raises SigError unless the request's SigV4 signature is right. Returns the access
    key id."""
    auth = headers.get("Authorization")
    if auth is None:
        raise SigError(403, "AccessDenied", "Access Denied (the request is not signed)")
    m = AUTH_RE.match(auth.strip())
    if m is None:
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; only AWS4-HMAC-SHA256 is accepted")
    parts = {}
    for comp in m.group(1).split(","):
        k, _, v = comp.strip().partition("=")
        parts[k] = v
    for k in ("Credential", "SignedHeaders", "Signature"):
        if not parts.get(k):
            raise SigError(400, "AuthorizationHeaderMalformed",
                           "The authorization header is malformed; missing %s." % k)
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; the Credential is mal-formed")
    key_id, date, region, service = scope[:4]
    secret = state.keys.get(key_id)
    if secret is None:
        raise SigError(403, "InvalidAccessKeyId",
                       "The AWS Access Key Id you provided does not exist in our records.",
                       AWSAccessKeyId=key_id)
    if region != state.region:
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; the region '%s' is wrong; "
                       "expecting '%s'" % (region, state.region), Region=state.region)
    if service != "s3":
        raise SigError(400, "AuthorizationHeaderMalformed",
                       "The authorization header is malformed; incorrect service '%s'" % service)
    amz_date = headers.get("x-amz-date")
    try:
        when = datetime.datetime.strptime(amz_date or "", "%Y%m%dT%H%M%SZ")
    except ValueError:
        raise SigError(403, "AccessDenied",
                       "AWS authentication requires a valid Date or x-amz-date header")
    if abs(datetime.datetime.utcnow() - when) > MAX_SKEW:
        raise SigError(403, "RequestTimeTooSkewed",
                       "The difference between the request time and the current time is too "
                       "large.", RequestTime=amz_date)
    if date != amz_date[:8]:
        raise SigError(403, "SignatureDoesNotMatch",
                       "The credential's date %s is not the request's %s" % (date, amz_date[:8]))
    if headers.get("x-amz-content-sha256") is None:
        raise SigError(400, "InvalidRequest",
                       "Missing required header for this request: x-amz-content-sha256")
    signed = [h.strip().lower() for h in parts["SignedHeaders"].split(";") if h.strip()]
    if "host" not in signed:
        raise SigError(403, "AccessDenied", "The host header must be signed")
    unsigned = sorted({k.lower() for k in headers.keys()
                       if k.lower().startswith("x-amz-") and k.lower() not in signed})
    if unsigned:
        raise SigError(403, "AccessDenied",
                       "There were headers present in the request which were not signed",
                       HeadersNotSigned=", ".join(unsigned))
    for name in signed:
        if headers.get(name) is None:
            raise SigError(403, "SignatureDoesNotMatch",
                           "The request names signed header '%s' but does not carry it" % name)

    path, _, query = raw_path.partition("?")
    params = []
    if query:
        for pair in query.split("&"):
            k, _, v = pair.partition("=")
            params.append((urllib.parse.unquote_plus(k), urllib.parse.unquote_plus(v)))
    sig_headers = HTTPHeaders()
    for name in signed:
        for v in headers.get_all(name):
            sig_headers[name] = v
    request = AWSRequest(method=method, url="http://%s%s" % (headers.get("host"), path),
                         headers=sig_headers, params=params)
    request.context["timestamp"] = amz_date
    signer = Verifier(Credentials(key_id, secret), region, signed)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(expected, parts["Signature"]):
        raise SigError(403, "SignatureDoesNotMatch",
                       "The request signature we calculated does not match the signature you "
                       "provided. Check your key and signing method.",
                       AWSAccessKeyId=key_id, StringToSign=string_to_sign,
                       CanonicalRequest=canonical)
    return key_id


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Small answers written in pieces would otherwise wait ~40 ms for the client's
    # delayed ACK (Nagle), on about every third request.
    disable_nagle_algorithm = True
    server_version = "sigproxy"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: the log endpoint has it all
        pass

    def handle_expect_100(self):
        # Decided in handle_any: a request refused before its body gets its final answer
        # instead of 100 Continue, as S3 does.
        return True

    def do_GET(self):
        self.handle_any()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    # -- helpers --------------------------------------------------------------------

    def send_plain(self, status, body, headers=(), close=False):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_s3_error(self, status, code, message, close=False, **detail):
        body = s3_error_xml(code, message, **detail)
        self.send_plain(status, body, [("Content-Type", "application/xml"),
                                       ("x-amz-request-id", uuid.uuid4().hex[:16].upper())],
                        close=close)

    def read_body(self, limit=None):
        if self.headers.get("Transfer-Encoding"):
            raise SigError(411, "MissingContentLength",
                           "You must provide the Content-Length HTTP header.")
        n = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            n = min(n, limit)
        chunks = []
        while n > 0:
            c = self.rfile.read(min(n, 1 << 20))
            if not c:
                raise ConnectionError("client went away mid-body")
            chunks.append(c)
            n -= len(c)
        return b"".join(chunks)

    def drop(self, reset=True):
        """Close the client connection at once, no answer: a reset (RST), or with reset
        False a plain close after what was written (FIN)."""
        self.close_connection = True
        if reset:
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def upstream(self):
        up = getattr(self, "_up", None)
        if up is None:
            host, port = self.server.state.upstream
            up = http.client.HTTPConnection(host, port, timeout=120)
            self._up = up
        return up

    def forward(self, body):
        headers = {}
        for k, v in self.headers.items():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                headers[k] = v
        headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):
            up = self.upstream()
            try:
                up.request(self.command, self.path, body=body, headers=headers)
                return up.getresponse()
            except (ConnectionError, http.client.HTTPException, OSError):
                up.close()
                self._up = None
                if attempt == 1:
                    raise

    # -- control endpoint -------------------------------------------------------------

    def control(self):
        state = self.server.state
        body = self.read_body()
        if self.path.startswith("/__proxy/faults"):
            if self.command == "POST":
                faults = json.loads(body or b"[]")
                if isinstance(faults, dict):
                    faults = [faults]
                with state.lock:
                    state.faults.extend(faults)
                self.send_plain(200, b"{}")
                return
            if self.command == "DELETE":
                with state.lock:
                    state.faults.clear()
                self.send_plain(200, b"{}")
                return
            if self.command == "GET":
                with state.lock:
                    out = json.dumps(state.faults).encode()
                self.send_plain(200, out)
                return
        if self.path.startswith("/__proxy/log"):
            if self.command == "GET":
                with state.lock:
                    out = json.dumps(state.log).encode()
                self.send_plain(200, out, [("Content-Type", "application/json")])
                return
            if self.command == "DELETE":
                with state.lock:
                    state.log.clear()
                self.send_plain(200, b"{}")
                return
        self.send_plain(404, b"no such control endpoint")

    # -- a request ----------------------------------------------------------------------

    def handle_any(self):
        if self.path.startswith("/__proxy/"):
            self.control()
            return
        state = self.server.state
        raw_path = self.path
        path, _, query = raw_path.partition("?")
        entry = {"method": self.command, "path": urllib.parse.unquote(path), "query": query,
                 "range": self.headers.get("Range"), "status": None, "fault": None,
                 "sig": "none", "t": time.time(), "t_end": None}
        state.record(entry)
        try:
            self.handle_request(state, raw_path, query, entry)
        finally:
            entry["t_end"] = time.time()

    def handle_request(self, state, raw_path, query, entry):
        has_body = int(self.headers.get("Content-Length") or 0) > 0
        expect = (self.headers.get("Expect") or "").lower() == "100-continue"
        try:
            try:
                verify(state, self.command, raw_path, self.headers)
                entry["sig"] = "ok"
            except SigError as e:
                entry["sig"] = "bad"
                entry["status"] = e.status
                entry["error"] = e.code
                self.send_s3_error(e.status, e.code, e.message, close=has_body, **e.detail)
                return
            fault = state.take_fault(self.command, entry["path"], query)
            action = fault.get("action") if fault else None
            entry["fault"] = action
            if action == "status":
                status = fault.get("status", 503)
                entry["status"] = status
                self.send_s3_error(status, fault.get("code", "SlowDown"),
                                   fault.get("message", "Please reduce your request rate."),
                                   close=has_body)
                return
            if action == "error_200":
                if has_body and not expect:
                    self.read_body()
                entry["status"] = 200
                self.send_s3_error(200, fault.get("code", "InternalError"),
                                   fault.get("message", "We encountered an internal error. "
                                                        "Please try again."),
                                   close=has_body and expect)
                return
            if action == "raw":
                body = fault.get("body", "").encode() * int(fault.get("body_repeat", 1))
                entry["status"] = fault.get("status", 200)
                self.send_plain(entry["status"], body,
                                list((fault.get("headers") or {}).items()), close=has_body)
                return
            if action == "garbage":
                self.wfile.write(fault.get("body", "\x00\x01garbage, not HTTP\r\n").encode())
                self.wfile.flush()
                self.drop()
                return
            if expect and has_body:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()
            if action == "cut_request":
                n = int(self.headers.get("Content-Length") or 0)
                self.read_body(limit=int(fault.get("after_bytes", n // 2)))
                entry["status"] = "cut"
                self.drop()
                return
            body = self.read_body()
            sha = self.headers.get("x-amz-content-sha256")
            if sha not in ("UNSIGNED-PAYLOAD",) and sha != hashlib.sha256(body).hexdigest():
                entry["status"] = 400
                self.send_s3_error(400, "XAmzContentSHA256Mismatch",
                                   "The provided 'x-amz-content-sha256' header does not match "
                                   "what was computed.")
                return
            if action == "delay":
                state.stop.wait(float(fault.get("seconds", 2)))
            try:
                resp = self.forward(body)
            except OSError as e:
                entry["status"] = 502
                self.send_plain(502, ("upstream: %s" % e).encode(), close=True)
                return
            self.relay(resp, fault, entry)
        except (ConnectionError, BrokenPipeError, socket.timeout, OSError) as e:
            entry["status"] = entry["status"] or "client-gone: %s" % e.__class__.__name__
            self.close_connection = True

    def relay(self, resp, fault, entry):
        action = fault.get("action") if fault else None
        state = self.server.state
        length = resp.getheader("Content-Length")
        if length is None and self.command != "HEAD" and resp.status not in (204, 304):
            data = resp.read()  # chunked upstream: small answers only
            length = str(len(data))
            pending = data
        else:
            pending = None
        entry["status"] = resp.status
        if action == "cut_response" and int(fault.get("after_bytes", -1)) == 0:
            resp.read()
            entry["status"] = "answer %d lost" % resp.status
            self.drop(reset=bool(fault.get("reset")))
            return
        if action == "stall" and fault.get("after_bytes") is None:
            state.stop.wait(float(fault.get("seconds", 30)))
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command == "HEAD":
            resp.read()
            return
        total = int(length or 0)
        cut_at = None
        if action == "cut_response":
            cut_at = int(fault.get("after_bytes", total // 2))
        stall_at = int(fault["after_bytes"]) if action == "stall" and \
            fault.get("after_bytes") is not None else None
        sent = 0
        while True:
            if pending is not None:
                chunk, pending = pending, b""
            else:
                chunk = resp.read(1 << 16)
            if not chunk:
                break
            for limit, what in ((cut_at, "cut"), (stall_at, "stall")):
                if limit is not None and sent + len(chunk) >= limit:
                    head = chunk[:max(0, limit - sent)]
                    self.wfile.write(head)
                    self.wfile.flush()
                    if what == "stall":
                        state.stop.wait(float(fault.get("seconds", 30)))
                    entry["status"] = "%s after %d bytes" % (what, limit)
                    resp.close()
                    self._up = None
                    self.drop(reset=what == "stall" or bool(fault.get("reset")))
                    return
            self.wfile.write(chunk)
            sent += len(chunk)
        self.wfile.flush()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of s3rver")
    ap.add_argument("--key", action="append", default=[], help="ID:SECRET (repeatable)")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    keys = dict(k.split(":", 1) for k in args.key)
    server = Server((args.listen, args.port), Handler)
    server.state = State(keys, args.region, (host, int(port)))
    print("listening %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.state.stop.set()


if __name__ == "__main__":
    main()
