"""One rendering of a pipeline's result for the generation routes (chat and completions).

``ERROR_RESPONSES``: their documented error statuses. ``respond(result)``: an SSE ``StreamingResponse``
when the result streams, else the JSON body with the ``safety`` field dropped when empty (it is only
present in annotate mode); the result's headers either way.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from service.protocol import ErrorResponse
from service.serving.streaming import Served

# The error statuses the generation routes document in the OpenAPI schema, each with the OpenAI envelope.
ERROR_RESPONSES: dict[int | str, dict] = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 429, 503, 504)}


def respond(result: Served[BaseModel]) -> Response:
    if result.stream is not None:
        return StreamingResponse(result.stream, media_type="text/event-stream", headers=result.headers)
    assert result.body is not None
    body = result.body.model_dump(mode="json")
    if body.get("safety") is None:  # only present in annotate mode
        body.pop("safety", None)
    return JSONResponse(body, headers=result.headers)
