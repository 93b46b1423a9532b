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


def flat_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """A DRF ValidationError's detail as {field path: messages}: nested fields joined with "." (`ratings.0.likert`)."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for name, value in detail.items():
            out.update(flat_errors(value, f"{prefix}.{name}" if prefix else str(name)))
        return out
    if isinstance(detail, list) and any(isinstance(item, (dict, list)) for item in detail):
        out = {}
        for i, item in enumerate(detail):
            if item:  # DRF lists an empty {} for each valid item of a `many=True` field
                out.update(flat_errors(item, f"{prefix}.{i}" if prefix else str(i)))
        return out
    messages = detail if isinstance(detail, list) else [detail]
    return {prefix or NON_FIELD: [str(m) for m in messages]}


def api_exception_handler(exc, context):
    """DRF's handler, plus one shape for every refused input: a ServiceError, and a serializer's ValidationError,
    answer `{"detail", "errors"}` (errors: field path -> messages), as the API's ErrorOutput documents."""
    from rest_framework.exceptions import ValidationError
    from rest_framework.response import Response
    from rest_framework.views import exception_handler

    if isinstance(exc, ValidationError):
        exc = ServiceError(flat_errors(exc.detail) or {NON_FIELD: ["Invalid input."]}, status=exc.status_code)
    if isinstance(exc, ServiceError):
        return Response({"detail": exc.detail, "errors": exc.errors}, status=exc.status)
    return exception_handler(exc, context)
