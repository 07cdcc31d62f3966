"""An SMTP sink for the smoke test: prints each message it receives as one JSON line.

`python3 mailsink.py HOST PORT`. It uses the standard library's `smtpd` (Python 3.11; the
policyengine image's interpreter), so the image needs nothing extra. The JSON line holds the
envelope and the raw message in base64, which smoke/drive.py reads back from the container log.
"""

import asyncore
import base64
import json
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
import smtpd  # noqa: E402  (deprecated in 3.11, still shipped; this sink runs only in the smoke stack)


class Sink(smtpd.SMTPServer):
    """Accepts every message and prints it; never relays."""

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):  # type: ignore[override]
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        print(json.dumps({"mail": {"from": mailfrom, "to": rcpttos, "raw_b64": base64.b64encode(raw).decode()}}),
              flush=True)


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    Sink((host, port), None, decode_data=False)
    print(f"smtp sink listening on {host}:{port}", flush=True)
    asyncore.loop()
