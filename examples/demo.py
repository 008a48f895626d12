#!/usr/bin/env python3
"""make demo: Kamailio running examples/kamailio.cfg with this tsilo.so, answering real SIP.

A caller (alice) calls bob while one of bob's devices is registered. The INVITE is relayed and
stored in the silo (shown with `kamcmd ts.dump`); bob answers, the call ends, and once TM has
destroyed the transaction the silo is empty again. Every message is printed as a ladder.

Set DEMO_KEEP=1 to leave Kamailio running at the end (stop it with Ctrl-C).
"""
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPATH = os.path.join(ROOT, "build") + ":/usr/lib/x86_64-linux-gnu/kamailio/modules"
START = time.time()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ua:
    """A tiny SIP user agent over UDP on loopback, printing what it sends and receives."""

    def __init__(self, name, proxy):
        self.name, self.proxy = name, proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cseq = 0

    def contact(self):
        return f"<sip:{self.name}@127.0.0.1:{self.port}>"

    def show(self, arrow, text):
        first = text.split("\r\n", 1)[0]
        t = time.time() - START
        if arrow == "->":
            print(f"  {t:6.3f}s  {self.name:>8} ---- {first:<44} ---> proxy")
        else:
            print(f"  {t:6.3f}s  {self.name:>8} <--- {first:<44} ---- proxy")

    def send(self, text):
        self.show("->", text)
        self.sock.sendto(text.encode(), ("127.0.0.1", self.proxy))

    def recv(self, timeout=5.0, want=None):
        end = time.time() + timeout
        while time.time() < end:
            self.sock.settimeout(max(0.01, end - time.time()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            msg = data.decode(errors="replace")
            self.show("<-", msg)
            if want is None or want(msg):
                return msg
        raise SystemExit(f"{self.name}: no expected message within {timeout}s")

    def request(self, method, ruri, to, call_id=None, extra="", body=""):
        self.cseq += 1
        call_id = call_id or f"{random.getrandbits(64):x}@demo"
        branch = f"z9hG4bK{random.getrandbits(48):x}"
        msg = (f"{method} {ruri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
               f"Max-Forwards: 70\r\n"
               f"From: <sip:{self.name}@127.0.0.1>;tag={self.name}{self.cseq}\r\n"
               f"To: {to}\r\n"
               f"Call-ID: {call_id}\r\n"
               f"CSeq: {self.cseq} {method}\r\n"
               f"Contact: {self.contact()}\r\n{extra}"
               f"Content-Length: {len(body)}\r\n\r\n{body}")
        self.send(msg)
        return msg

    def reply(self, req, code, reason, totag="dev"):
        heads = [l for l in req.split("\r\n") if l.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq", "record-route")]
        heads = [l + f";tag={totag}" if l.lower().startswith("to:") and code > 100 and "tag=" not in l else l for l in heads]
        self.send(f"SIP/2.0 {code} {reason}\r\n" + "\r\n".join(heads) +
                  f"\r\nContact: {self.contact()}\r\nContent-Length: 0\r\n\r\n")


def header(msg, name):
    for line in msg.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def kamcmd(ctl, *args):
    return subprocess.run(["kamcmd", "-s", ctl, *args], capture_output=True, text=True).stdout


def main():
    port = free_port()
    work = tempfile.mkdtemp(prefix="tsilo-demo-")
    ctl = f"unix:{work}/ctl.sock"
    log = open(os.path.join(work, "kamailio.log"), "w")
    cmd = ["kamailio", "-DD", "-E", "-f", os.path.join(ROOT, "examples/kamailio.cfg"), "-L", MPATH,
           "-Y", work, "-w", work, "-m", "64", "-M", "8",
           "-A", f"LISTEN=udp:127.0.0.1:{port}", "-A", f'CTL_SOCK="{ctl}"']
    print("$ " + " ".join(cmd))
    kam = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if kamcmd(ctl, "core.version"):
                break
            if kam.poll() is not None:
                raise SystemExit("kamailio exited:\n" + open(log.name).read()[-3000:])
            time.sleep(0.1)
        print(f"\nKamailio (pid {kam.pid}) is up on udp:127.0.0.1:{port}: {kamcmd(ctl, 'core.version').strip()}")
        mods = [l for l in open(log.name) if "tsilo" in l and "ERROR" in l]
        if mods:
            raise SystemExit("tsilo errors:\n" + "".join(mods))

        print("\n1. OPTIONS ping")
        alice = Ua("alice", port)
        alice.request("OPTIONS", f"sip:127.0.0.1:{port}", f"<sip:127.0.0.1:{port}>")
        alice.recv(want=lambda m: m.startswith("SIP/2.0 200"))

        print("\n2. bob's phone registers")
        bob = Ua("bob", port)
        bob.request("REGISTER", f"sip:127.0.0.1:{port}", "<sip:bob@127.0.0.1>", extra="Expires: 300\r\n")
        bob.recv(want=lambda m: m.startswith("SIP/2.0 200"))

        print("\n3. alice calls bob: Kamailio relays the INVITE and stores the transaction")
        alice.request("INVITE", "sip:bob@127.0.0.1", "<sip:bob@127.0.0.1>",
                      extra="Content-Type: application/sdp\r\n",
                      body="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
        inv = bob.recv(want=lambda m: m.startswith("INVITE"))
        bob.reply(inv, 180, "Ringing")
        alice.recv(want=lambda m: m.startswith("SIP/2.0 180"))
        print("\n   $ kamcmd ts.dump   (while bob's phone rings)")
        print("   " + kamcmd(ctl, "ts.dump").replace("\n", "\n   "))

        print("4. bob answers, alice hangs up")
        bob.reply(inv, 200, "OK")
        ok = alice.recv(want=lambda m: m.startswith("SIP/2.0 200"))
        call_id = header(inv, "Call-ID")
        alice.request("ACK", f"sip:bob@127.0.0.1:{bob.port}", header(ok, "To"), call_id=call_id,
                      extra=f"Route: {header(ok, 'Record-Route')}\r\n")
        bob.recv(want=lambda m: m.startswith("ACK"))
        alice.request("BYE", f"sip:bob@127.0.0.1:{bob.port}", header(ok, "To"), call_id=call_id,
                      extra=f"Route: {header(ok, 'Record-Route')}\r\n")
        bye = bob.recv(want=lambda m: m.startswith("BYE"))
        bob.reply(bye, 200, "OK")
        alice.recv(want=lambda m: m.startswith("SIP/2.0 200") and "BYE" in header(m, "CSeq"))

        print("\n5. TM destroys the transaction after its wait timer: the silo is empty again")
        for _ in range(100):
            if "stored_transactions = 0" in kamcmd(ctl, "stats.get_statistics", "tsilo:"):
                break
            time.sleep(0.1)
        print("   $ kamcmd stats.get_statistics tsilo:")
        print("   " + kamcmd(ctl, "stats.get_statistics", "tsilo:").strip().replace("\n", "\n   "))

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
        print(f"\nKamailio stopped. Its log: {log.name}")


if __name__ == "__main__":
    sys.exit(main())
