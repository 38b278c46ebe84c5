"""Outgoing mail behind a Protocol: SMTP when configured, otherwise files in ``var/outbox/``."""

from __future__ import annotations

import smtplib
import ssl
import unicodedata
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from core.db import uuid7
from core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    text: str


class Mailer(Protocol):
    def send(self, mail: Mail) -> str:
        """Send (or store) one message and return where it went."""


def header_text(value: str) -> str:
    """``value`` as one header line: line breaks and other control characters become spaces.

    The email package refuses a header value holding a line break (a header injection), and a mail
    task that raises is never retried: a name stored with a line break before names were checked
    would otherwise make every mail that quotes it fail for good.
    """
    return " ".join("".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in value).split())


def build_message(mail: Mail, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = header_text(sender)
    msg["To"] = header_text(mail.to)
    msg["Subject"] = header_text(mail.subject)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="courtyard.local")
    msg.set_content(mail.text, charset="utf-8")
    return msg


class OutboxMailer:
    """Writes each message as an ``.eml`` file a person can open; the default with no SMTP server."""

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self.sender = sender

    def send(self, mail: Mail) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        # uuid7 names sort by time, so `ls var/outbox` lists the newest message last.
        path = self.directory / f"{uuid7()}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(build_message(mail, self.sender)))
        tmp.replace(path)  # atomic: a reader never sees half a message
        return str(path)


class SmtpMailer:
    """``smtp://user:pass@host:25`` (STARTTLS when offered) or ``smtps://...:465``."""

    def __init__(self, url: str, sender: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            msg = f"COURTYARD_SMTP_URL must look like smtp://user:pass@host:port, got {url!r}"
            raise ConfigError(msg)
        self.ssl = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.ssl else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender

    def send(self, mail: Mail) -> str:
        message = build_message(mail, self.sender)
        context = ssl.create_default_context()
        if self.ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, context=context, timeout=30)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=30)
        with client:
            if not self.ssl and client.has_extn("starttls"):
                client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password or "")
            client.send_message(message)
        return f"smtp://{self.host}:{self.port}"


def make_mailer(smtp_url: str | None, outbox: Path, sender: str) -> Mailer:
    return SmtpMailer(smtp_url, sender) if smtp_url else OutboxMailer(outbox, sender)
