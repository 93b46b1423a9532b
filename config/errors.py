"""The one error type services raise for a request the user can fix, and the DRF handler that answers it."""
from __future__ import annotations

NON_FIELD = "non_field_errors"


class ServiceError(Exception):
    """A request a service refuses, with what to fix: `errors` maps a field name to messages.

    Raise it as `ServiceError("message")` (not tied to a field), `ServiceError("message", field="name")`,
    or with a whole mapping `ServiceError({"ratings.12.likert": ["..."]})`. `status` is the HTTP status an
    API answers with (400 by default; 409 for a conflict with stored state, 503 when a backing service
    is down). Views show `errors` beside the form fields; the API returns them as `{"detail", "errors"}`.
    """

    status: int = 400

    def __init__(self, errors: dict[str, list[str]] | str, *, field: str | None = None, status: int | None = None):
        if isinstance(errors, str):
            errors = {field or NON_FIELD: [errors]}
        self.errors: dict[str, list[str]] = {name: list(messages) for name, messages in errors.items()}
        if status is not None:
            self.status = status
        super().__init__("; ".join(m for messages in self.errors.values() for m in messages))

    @property
    def field(self) -> str:
        """The first field named (NON_FIELD when the error is about the request as a whole)."""
        return next(iter(self.errors))

    @property
    def message(self) -> str:
        """The first message, for a one-line notice."""
        return next(iter(self.errors.values()))[0]

    @property
    def detail(self) -> str:
        """One line for the API's `detail`: the message itself, or how many things need fixing."""
        count = sum(len(messages) for messages in self.errors.values())
        return self.message if count == 1 else f"{count} things to fix before this can be saved."


def api_exception_handler(exc, context):
    """DRF's handler, plus: a ServiceError becomes its status with `{"detail", "errors"}`."""
    from rest_framework.response import Response
    from rest_framework.views import exception_handler

    if isinstance(exc, ServiceError):
        return Response({"detail": exc.detail, "errors": exc.errors}, status=exc.status)
    return exception_handler(exc, context)
