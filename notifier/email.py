"""Email over SMTP (aiosmtplib): multipart/alternative, plain text + autoescaped HTML."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiosmtplib
from policyengine.notifier.errors import DeliveryError
from policyengine.notifier.notice import Notice
from policyengine.notifier.render import TemplateRenderer


def compose(notice: Notice, renderer: TemplateRenderer, to: str) -> dict[str, Any]:
    return {
        "to": [a.strip() for a in to.split(",") if a.strip()],
        "subject": renderer.render("email_subject.txt.j2", n=notice).replace("\n", " "),
        "text": renderer.render("email.txt.j2", n=notice),
        "html": renderer.render("email.html.j2", n=notice),
    }


class EmailSender:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool = False,
        use_tls: bool = False,
        timeout_s: float = 30,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self._username, self._password = username, password
        self._start_tls, self._use_tls, self._timeout = start_tls, use_tls, timeout_s

    def build(self, payload: dict[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(payload["to"])
        msg["Subject"] = payload["subject"]
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        msg.set_content(payload["text"])
        msg.add_alternative(payload["html"], subtype="html")
        return msg

    async def send(self, payload: dict[str, Any]) -> dict[str, Any]:
        msg = self.build(payload)
        try:
            errors, response = await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self._username,
                password=self._password,
                start_tls=self._start_tls,
                use_tls=self._use_tls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as e:
            raise DeliveryError(f"smtp: all recipients refused: {e}", retriable=False)
        except aiosmtplib.SMTPAuthenticationError as e:
            raise DeliveryError(f"smtp: authentication failed ({e.code})", retriable=False)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            raise DeliveryError(f"smtp {self.host}:{self.port}: {type(e).__name__}: {e}")
        return {"message_id": msg["Message-ID"], "response": response, "refused": sorted(errors)}
