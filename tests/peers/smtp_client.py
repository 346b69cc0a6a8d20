#!/usr/bin/env python3
"""A real SMTP client for Sluice's end-to-end tests: Python's smtplib.

Reads one JSON job on stdin:
  {"host": "127.0.0.1", "port": 2525, "threads": 10,
   "messages": [{"from": "a@b", "to": ["c@d"], "data_hex": "...", "ehlo": "client.test"}]}
and prints one JSON line per message, in order:
  {"ok": true, "code": 250, "reply": "2.0.0 Ok: queued as ID", "refused": {}}
or {"ok": false, "stage": "rcpt", "code": 554, "reply": "..."}.
Each message is its own SMTP session, so `threads` sessions run at once.
"""
import json
import smtplib
import sys
from concurrent.futures import ThreadPoolExecutor


def send(job, msg):
    data = bytes.fromhex(msg["data_hex"])
    try:
        with smtplib.SMTP(job["host"], job["port"], local_hostname=msg.get("ehlo", "client.test"), timeout=60) as s:
            code, reply = s.ehlo()
            if code != 250:
                return {"ok": False, "stage": "ehlo", "code": code, "reply": reply.decode()}
            code, reply = s.mail(msg["from"])
            if code != 250:
                return {"ok": False, "stage": "mail", "code": code, "reply": reply.decode()}
            refused = {}
            for rcpt in msg["to"]:
                code, reply = s.rcpt(rcpt)
                if code not in (250, 251):
                    refused[rcpt] = [code, reply.decode()]
            if len(refused) == len(msg["to"]):
                return {"ok": False, "stage": "rcpt", "code": code, "reply": reply.decode(), "refused": refused}
            code, reply = s.data(data)
            return {"ok": code == 250, "stage": "data", "code": code, "reply": reply.decode(), "refused": refused}
    except (OSError, smtplib.SMTPException) as e:
        return {"ok": False, "stage": "connection", "code": 0, "reply": repr(e)}


def main():
    job = json.load(sys.stdin)
    with ThreadPoolExecutor(max_workers=job.get("threads", 1)) as pool:
        results = list(pool.map(lambda m: send(job, m), job["messages"]))
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
