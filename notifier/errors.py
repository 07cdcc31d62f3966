from __future__ import annotations


class DeliveryError(Exception):
    """A delivery that failed; `retriable` False means retrying cannot help (e.g. 404 webhook)."""

    def __init__(self, message: str, *, retriable: bool = True, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.retry_after_s = retry_after_s


def classify_status(status: int, body: str, where: str, retry_after: str | None = None) -> DeliveryError:
    """Turn an HTTP failure into a DeliveryError: 408/429/5xx retriable, other 4xx not."""
    ra: float | None = None
    if retry_after:
        try:
            ra = float(retry_after)
        except ValueError:
            ra = None
    retriable = status in (408, 409, 425, 429) or status >= 500
    return DeliveryError(f"{where}: HTTP {status}: {body[:300]}", retriable=retriable, retry_after_s=ra)
