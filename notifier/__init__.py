"""Delivering approval notifications: Slack, Microsoft Teams, email (SMTP), webhooks.

The notifier never decides anything: it renders a :class:`Notice` through
Jinja2 templates (``notifier/templates/``, overridable per deployment) into a
channel payload, and sends payloads. Retries and the outbox live with the
caller (``policyengine.approvals``), which uses :func:`backoff_s` for timing.
"""

from policyengine.notifier.errors import DeliveryError
from policyengine.notifier.notice import Notice, Reason
from policyengine.notifier.outbox import OutboxSender, backoff_s
from policyengine.notifier.render import TemplateRenderer

__all__ = ["DeliveryError", "Notice", "OutboxSender", "Reason", "TemplateRenderer", "backoff_s"]
