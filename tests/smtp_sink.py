"""An SMTP server for the tests (aiosmtpd): takes every message and writes it as a JSON file.

Usage: smtp_sink.py DIR [--user NAME --password-file FILE] [--refuse ADDRESS ...]
                       [--starttls-cert CERT --starttls-key KEY]

Listens on a free loopback port and prints that port alone on the first line of stdout. Each
message accepted becomes DIR/NNNNNN.json, written whole (a temporary file renamed):
{"from": envelope sender, "to": [envelope recipients], "login": the user name it logged in with
or null, "peer": the client's address and port (one per connection), "raw": the message as
received, and as Python's email package reads it: "subject", "content_type", "text" and "html"
(the decoded plain-text and HTML bodies with lines ending in \n, or null)}. With --user, a login (AUTH PLAIN or LOGIN, allowed
without TLS) with that name and the file's password is required before MAIL. A recipient given
with --refuse is answered 550 at RCPT. With --starttls-cert, STARTTLS is offered (with that
certificate and key, PEM) and required before anything else.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
from email import message_from_bytes, policy

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, directory, refuse):
        self.directory = directory
        self.refuse = {a.lower() for a in refuse}
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        message = message_from_bytes(content, policy=policy.default)

        def body(kind):
            part = message.get_body((kind,))
            if part is None or part.get_content_type() != f"text/{kind}":
                return None
            return part.get_content().replace("\r\n", "\n")

        login = session.auth_data if isinstance(session.auth_data, str) else None
        record = {
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "login": login,
            "peer": f"{session.peer[0]}:{session.peer[1]}",
            "raw": content.decode("utf-8", "replace"),
            "subject": str(message["subject"] or ""),
            "content_type": message.get_content_type(),
            "text": body("plain"),
            "html": body("html"),
        }
        path = os.path.join(self.directory, f"{self.count:06d}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        return "250 2.0.0 Message accepted"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--user")
    parser.add_argument("--password-file")
    parser.add_argument("--refuse", action="append", default=[])
    parser.add_argument("--starttls-cert")
    parser.add_argument("--starttls-key")
    args = parser.parse_args()

    password = None
    if args.user:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.read()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode("utf-8", "replace") == args.user
            and auth_data.password.decode("utf-8", "replace") == password
        )
        # handled=False: aiosmtpd answers 535 itself (its default, True, answers nothing).
        return AuthResult(success=ok, handled=False, auth_data=args.user if ok else None)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sink = Sink(args.directory, args.refuse)
    options = {}
    if args.user:
        options = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
    if args.starttls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.starttls_cert, args.starttls_key)
        options.update(tls_context=context, require_starttls=True)
    # A fixed hostname: the default asks DNS (socket.getfqdn), which may hang without a resolver.
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(sink, hostname="sink.test", **options), host="127.0.0.1", port=0)
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
