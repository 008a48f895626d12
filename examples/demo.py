#!/usr/bin/env python3
"""make demo: late parallel forking with tsilo, on a real Kamailio, printed as a ladder.

Kamailio runs examples/kamailio.cfg with this tsilo.so; a small push gateway stub answers its
HTTP push requests, one per device (RFC 8599: each device registered its pn-provider, pn-prid and
pn-param in its Contact), by waking that device, which then REGISTERs.

Call 1: bob has three devices: his phone is awake (no pn parameters), his tablet (apns) and laptop
        (fcm) are asleep. alice calls bob: the INVITE rings the phone and is stored; one push per
        sleeping device wakes the tablet and the laptop, each REGISTERs and gets its own branch of
        the same INVITE (ts_append_by_contact). The laptop answers, the other branches are cancelled.
Call 2: carol's only device is asleep: the INVITE is suspended (t_suspend), the push wakes the
        device, its REGISTER's append resumes the call (tsilo's resume_route runs route[RESUME]),
        which relays it to the device, where it is answered.

Set DEMO_KEEP=1 to leave Kamailio running at the end (stop it with Ctrl-C).
"""
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Ours first, then the installed Kamailio's modules (make demo KAMAILIO=6.1.4 sets both for an
# upstream build).
MPATH = (os.environ.get("TSILO_MODULE_DIR") or os.path.join(ROOT, "build")) + ":" + \
    os.environ.get("TSILO_KAMAILIO_MODULES", "/usr/lib/x86_64-linux-gnu/kamailio/modules")
START = time.time()
COLUMNS = ["alice", "kamailio", "push-gw", "bob-phone", "bob-tablet", "bob-laptop", "carol-phone"]
WIDTH = 12
PRINT = threading.Lock()


def ladder(src, dst, label):
    """One arrow between two columns of the ladder, with the time since the demo started.
    The label sits on the arrow when it fits, else at the end of the line."""
    a, b = COLUMNS.index(src), COLUMNS.index(dst)
    lo, hi = min(a, b), max(a, b)
    span = (hi - lo) * WIDTH - 1
    text = f" {label} "
    outside = len(text) > span - 4
    body = "-" * (span - 1) if outside else ("-" * ((span - 1 - len(text)) // 2) + text).ljust(span - 1, "-")
    arrow = body + ">" if a < b else "<" + body
    line = "|".center(WIDTH) * lo + " " * (WIDTH // 2) + arrow + " " * (WIDTH - WIDTH // 2) + "|".center(WIDTH) * (len(COLUMNS) - hi - 1)
    with PRINT:
        print(f"{time.time() - START:7.3f}s {line}" + (f" {label}" if outside else ""))


def say(text):
    with PRINT:
        print(text)


def header(msg, name):
    for line in msg.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def summary(msg):
    first = msg.split("\r\n", 1)[0]
    if first.startswith("SIP/2.0"):
        return f"{first[8:]} ({header(msg, 'CSeq').split()[-1]})"
    return first.split()[0]


class Endpoint:
    """A SIP endpoint on a UDP socket of its own, talking to Kamailio."""

    def __init__(self, name, user, proxy, pn=None):
        self.name, self.user, self.proxy = name, user, proxy
        # RFC 8599: (provider, prid, param) in the Contact URI, with a +sip.instance.
        self.contact_params = "".join(f";pn-{k}={v}" for k, v in zip(("provider", "prid", "param"), pn or ()))
        self.instance = f';+sip.instance="<urn:uuid:00000000-0000-4000-8000-{name.encode().hex()[:12]:0>12}>"' if pn else ""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cseq = 0

    def send(self, text):
        ladder(self.name, "kamailio", summary(text))
        self.sock.sendto(text.encode(), ("127.0.0.1", self.proxy))

    def request(self, method, ruri, to, call_id=None, extra="", body=""):
        self.cseq += 1
        msg = (f"{method} {ruri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{random.getrandbits(48):x};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:{self.user}@127.0.0.1>;tag={self.name}{self.cseq}\r\n"
               f"To: {to}\r\nCall-ID: {call_id or f'{random.getrandbits(64):x}@demo'}\r\n"
               f"CSeq: {self.cseq} {method}\r\nContact: <sip:{self.user}@127.0.0.1:{self.port}{self.contact_params}>"
               f"{self.instance}\r\n{extra}"
               f"Content-Length: {len(body)}\r\n\r\n{body}")
        self.send(msg)
        return msg

    def reply(self, req, code, reason):
        keep = ("via", "from", "to", "call-id", "cseq", "record-route")
        heads = [l for l in req.split("\r\n") if l.split(":", 1)[0].lower() in keep]
        heads = [l + f";tag={self.name}" if l.lower().startswith("to:") and code > 100 and "tag=" not in l
                 else l for l in heads]
        self.send(f"SIP/2.0 {code} {reason}\r\n" + "\r\n".join(heads) +
                  f"\r\nContact: <sip:{self.user}@127.0.0.1:{self.port}>\r\nContent-Length: 0\r\n\r\n")

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
        except socket.timeout:
            return None
        msg = data.decode(errors="replace")
        ladder("kamailio", self.name, summary(msg))
        return msg


class Device(Endpoint, threading.Thread):
    """A callee's device: registers when told to, rings on INVITE, answers if it is the one."""

    def __init__(self, name, user, proxy, answer_after=None, pn=None):
        threading.Thread.__init__(self, daemon=True)
        Endpoint.__init__(self, name, user, proxy, pn)
        self.answer_after = answer_after
        self.registered = threading.Event()
        self.done = threading.Event()
        self.start()

    def register(self):
        self.request("REGISTER", f"sip:127.0.0.1:{self.proxy}", f"<sip:{self.user}@127.0.0.1>",
                     extra="Expires: 300\r\n")

    def run(self):
        invite = None
        while not self.done.is_set():
            msg = self.recv(0.1)
            if msg is None:
                continue
            if msg.startswith("SIP/2.0 200") and "REGISTER" in header(msg, "CSeq"):
                self.registered.set()
            elif msg.startswith("INVITE"):
                invite = msg
                self.reply(msg, 180, "Ringing")
                if self.answer_after is not None:
                    threading.Timer(self.answer_after, self.reply, (msg, 200, "OK")).start()
            elif msg.startswith("CANCEL"):
                self.reply(msg, 200, "OK")
                if invite:
                    self.reply(invite, 487, "Request Terminated")
            elif msg.startswith("BYE"):
                self.reply(msg, 200, "OK")


class PushGateway(http.server.ThreadingHTTPServer):
    """Stands in for an APNs/FCM gateway: a push for a device (its pn-prid) wakes it after a
    delay of its own."""

    def __init__(self):
        self.sleeping = {}  # prid -> (device, delay)
        super().__init__(("127.0.0.1", 0), PushHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class PushHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        push = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        ladder("kamailio", "push-gw", f"push {push.get('provider')} {push.get('prid')}")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")
        ladder("push-gw", "kamailio", "HTTP 200")
        woken = self.server.sleeping.pop(push.get("prid"), None)
        if woken:
            threading.Timer(woken[1], woken[0].register).start()

    def log_message(self, *args):
        pass


def kamcmd(ctl, *args):
    return subprocess.run(["kamcmd", "-s", ctl, *args], capture_output=True, text=True).stdout


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(alice, callee, proxy, ctl, show_dump_after):
    """alice calls `callee`, shows ts.dump while it rings, and hangs up after the answer."""
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    inv = alice.request("INVITE", f"sip:{callee}@127.0.0.1", f"<sip:{callee}@127.0.0.1>",
                        extra="Content-Type: application/sdp\r\n", body=sdp)
    dumped, deadline, ok = False, time.time() + 20, None
    while time.time() < deadline and ok is None:
        msg = alice.recv(0.1)
        if msg and msg.startswith("SIP/2.0 200"):
            ok = msg
        elif not dumped and time.time() - START > show_dump_after:
            dumped = True
            say("\n        $ kamcmd ts.dump      (the call is pending)\n        " +
                kamcmd(ctl, "ts.dump").strip().replace("\n", "\n        ") + "\n")
    if ok is None:
        raise SystemExit(f"no answer from {callee}")
    call_id = header(inv, "Call-ID")
    route = f"Route: {header(ok, 'Record-Route')}\r\n"
    contact = header(ok, "Contact").strip("<>")
    alice.request("ACK", contact, header(ok, "To"), call_id=call_id, extra=route)
    time.sleep(0.3)
    alice.cseq += 1
    alice.request("BYE", contact, header(ok, "To"), call_id=call_id, extra=route)
    while (msg := alice.recv(2)) and "BYE" not in header(msg, "CSeq"):
        pass


def main():
    port, gateway = free_port(), PushGateway()
    work = tempfile.mkdtemp(prefix="tsilo-demo-")
    ctl = f"unix:{work}/ctl.sock"
    log = open(os.path.join(work, "kamailio.log"), "w")
    cmd = ["kamailio", "-DD", "-E", "-f", os.path.join(ROOT, "examples/kamailio.cfg"), "-L", MPATH,
           "-Y", work, "-w", work, "-m", "64", "-M", "8", "-A", f"LISTEN=udp:127.0.0.1:{port}",
           "-A", f'CTL_SOCK="{ctl}"', "-A", f'PUSH_URL="http://127.0.0.1:{gateway.server_port}/push"']
    print("$ " + " ".join(cmd))
    kam = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if kamcmd(ctl, "core.version"):
                break
            if kam.poll() is not None:
                raise SystemExit("kamailio exited:\n" + open(log.name).read()[-3000:])
            time.sleep(0.1)
        print(f"Kamailio (pid {kam.pid}) is up on udp:127.0.0.1:{port}: {kamcmd(ctl, 'core.version').strip()}\n")
        print("         " + "".join(c.center(WIDTH) for c in COLUMNS))

        alice = Endpoint("alice", "alice", port)
        phone = Device("bob-phone", "bob", port)
        tablet = Device("bob-tablet", "bob", port, pn=("apns", "t0k3n-tablet", "TEAM.demo.voip"))
        laptop = Device("bob-laptop", "bob", port, answer_after=1.0, pn=("fcm", "t0k3n-laptop", "demo"))
        carol = Device("carol-phone", "carol", port, answer_after=1.0, pn=("fcm", "t0k3n-carol", "demo"))
        say("\nThe devices register; the tablet, the laptop and carol's phone (pn parameters) then sleep")
        for d in (phone, tablet, laptop, carol):
            d.register()
            d.registered.wait(5)
        time.sleep(0.2)  # their REGISTER routes finish (a device registering as a call comes in rings)
        say("\nCall 1: bob's phone is awake, his tablet and laptop are asleep")
        gateway.sleeping["t0k3n-tablet"] = (tablet, 0.4)
        gateway.sleeping["t0k3n-laptop"] = (laptop, 0.8)
        call(alice, "bob", port, ctl, show_dump_after=time.time() - START + 1.2)

        say("\nCall 2: carol's only device is asleep: the call waits, suspended, for it")
        gateway.sleeping["t0k3n-carol"] = (carol, 0.5)
        call(alice, "carol", port, ctl, show_dump_after=time.time() - START + 1.0)

        for _ in range(100):
            if "stored_transactions = 0" in kamcmd(ctl, "stats.get_statistics", "tsilo:"):
                break
            time.sleep(0.1)
        say("\nBoth calls ended; TM destroyed their transactions and the silo is empty again:")
        say("        $ kamcmd stats.get_statistics tsilo:\n        " +
            kamcmd(ctl, "stats.get_statistics", "tsilo:").strip().replace("\n", "\n        "))
        if os.environ.get("DEMO_KEEP"):
            print(f"\nKamailio keeps running (pid {kam.pid}, RPC: kamcmd -s {ctl}); Ctrl-C stops it.")
            kam.wait()
    except KeyboardInterrupt:
        pass
    finally:
        kam.send_signal(signal.SIGTERM)
        try:
            kam.wait(10)
        except subprocess.TimeoutExpired:
            kam.kill()
        gateway.shutdown()
        print(f"\nKamailio stopped. Its log: {log.name}")


if __name__ == "__main__":
    sys.exit(main())
