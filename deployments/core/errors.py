"""Every refusal animegan-serve makes, as a type with a stable code and an HTTP status.

    AnimeGANError
    ├── InvalidImage        400 invalid_image       bytes that claim to be an image but are broken
    ├── InvalidVideo        400 invalid_video       a video (or animation) that cannot be read
    ├── BadParameter        400 bad_parameter       a request option out of range or unknown
    ├── Unauthorized        401 unauthorized        no or wrong API key (when one is set)
    ├── UnknownStyle        404 unknown_style       a style that is not configured
    ├── UnknownJob          404 unknown_job         a job id never issued, or expired
    ├── UnknownResult       404 unknown_result      a result key not (or no longer) stored
    ├── UnknownExample      404 unknown_example     not one of the examples_dir pictures
    ├── JobNotQueued        409 job_not_queued      only a queued job can be cancelled
    ├── Cancelled           409 cancelled           (a job's error) cancelled while queued
    ├── TooLarge            413 too_large           over the byte or pixel limits
    ├── IdempotencyConflict 422 idempotency_conflict an Idempotency-Key reused for other work
    ├── UnsupportedFormat   415 unsupported_format  not an image format we decode
    ├── TooManyJobs         429 too_many_jobs       this client has its limit of jobs queued
    ├── Overloaded          503 overloaded          the service sheds load; retry later
    ├── JobLost             503 job_lost            (a job's error) its ingress replica died
    ├── StyleNotReady       503 style_not_ready     configured, but its weights failed to load
    ├── Timeout             504 timeout             the request's deadline passed
    ├── Unreachable         502 unreachable         (CLI) the server did not answer usefully
    ├── FileError           500 file_error          (CLI) a file could not be read or written
    └── WeightsError        500 weights_unavailable weights missing, unreadable or failing their pin

The HTTP layer maps them to responses in one place; the CLI prints `code: message`. Those that
ask the caller to come back later carry `retry_after_s` (sent as `Retry-After`).
"""

from __future__ import annotations


class AnimeGANError(Exception):
    """Base class: `code` is stable for clients, `message` is for people."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[object, ...]:  # keeps retry_after_s across Ray's pickling
        return (_rebuild, (type(self), self.message, self.retry_after_s))

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidImage(AnimeGANError):
    code = "invalid_image"
    http_status = 400


class InvalidVideo(AnimeGANError):
    code = "invalid_video"
    http_status = 400


class BadParameter(AnimeGANError):
    code = "bad_parameter"
    http_status = 400


class Unauthorized(AnimeGANError):
    code = "unauthorized"
    http_status = 401


class UnknownStyle(AnimeGANError):
    code = "unknown_style"
    http_status = 404


class UnknownJob(AnimeGANError):
    code = "unknown_job"
    http_status = 404


class UnknownResult(AnimeGANError):
    code = "unknown_result"
    http_status = 404


class UnknownExample(AnimeGANError):
    code = "unknown_example"
    http_status = 404


class JobNotQueued(AnimeGANError):
    code = "job_not_queued"
    http_status = 409


class Cancelled(AnimeGANError):
    code = "cancelled"
    http_status = 409


class TooLarge(AnimeGANError):
    code = "too_large"
    http_status = 413


class IdempotencyConflict(AnimeGANError):
    code = "idempotency_conflict"
    http_status = 422


class UnsupportedFormat(AnimeGANError):
    code = "unsupported_format"
    http_status = 415


class TooManyJobs(AnimeGANError):
    code = "too_many_jobs"
    http_status = 429


class Overloaded(AnimeGANError):
    code = "overloaded"
    http_status = 503


class JobLost(AnimeGANError):
    code = "job_lost"
    http_status = 503


class Timeout(AnimeGANError):
    code = "timeout"
    http_status = 504


class Unreachable(AnimeGANError):
    code = "unreachable"
    http_status = 502


class FileError(AnimeGANError):
    code = "file_error"
    http_status = 500


class StyleNotReady(AnimeGANError):
    code = "style_not_ready"
    http_status = 503


class WeightsError(AnimeGANError):
    code = "weights_unavailable"
    http_status = 500


def error_from_code(code: str, message: str) -> AnimeGANError:
    """Rebuild a typed error that crossed a process boundary as (code, message)."""
    for kind in AnimeGANError.__subclasses__():
        if kind.code == code:
            return kind(message)
    return AnimeGANError(message)


def _rebuild(kind: type[AnimeGANError], message: str, retry_after_s: float | None) -> AnimeGANError:
    return kind(message, retry_after_s=retry_after_s)
