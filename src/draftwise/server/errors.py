"""Errors in OpenAI's format: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error",
          499: "client_closed_request", 503: "service_unavailable", 504: "timeout_error"}


class APIError(Exception):
    """An error answered to the client with an HTTP status (4xx for bad input)."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _param(loc) -> str | None:
    """('body', 'messages', 0, 'content', 'str') -> 'messages.0.content' (drops union tags)."""
    from draftwise.server.schemas import FIELDS

    out = []
    for p in loc[1:] if loc and loc[0] == "body" else loc:
        if not (isinstance(p, int) or p in FIELDS):
            break
        out.append(str(p))
    return ".".join(out) or None


def from_validation(exc: RequestValidationError) -> APIError:
    """The first pydantic/JSON error as a 400, naming the offending field."""
    errs = exc.errors()
    if not errs:
        return APIError(400, "invalid request body")
    e = errs[0]
    if e.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON: {e.get('ctx', {}).get('error', '')}",
                        code="invalid_json")
    param = _param(e.get("loc", ()))
    msg = e.get("msg", "invalid value").removeprefix("Value error, ")
    others = {_param(x.get("loc", ())) for x in errs} - {param}  # union members share a param
    more = f" (and {len(others)} more problems)" if others else ""
    return APIError(400, f"{param}: {msg}{more}" if param else f"{msg}{more}", param=param,
                    code="invalid_value")


def install(app: FastAPI, count) -> None:
    """Answer every error in OpenAI's format; `count(request, status)` records it."""

    def answer(request: Request, err: APIError) -> JSONResponse:
        count(request, err.status)
        return err.response()

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError):
        return answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return answer(request, from_validation(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return answer(request, APIError(exc.status_code, str(exc.detail), headers=exc.headers))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return answer(request, APIError(500, f"internal error: {type(exc).__name__}"))
