"""An LLM-as-judge Serve application that calls a model server through a deployment handle.

It shows how another application in the same cluster (an agent, a judge, a resources server)
uses a model server without going through HTTP: the handle routes to the model server's
replicas like the HTTP proxy does, so its calls share the same upstream budget.

    serve_config.yaml:
      - name: judge
        route_prefix: /judge
        import_path: serve_app.examples.judge:build_app
        args: {model_app: judge_model, inbound_api_keys_env: INBOUND_API_KEYS}

    curl -s localhost:8000/judge/grade -H "authorization: Bearer $KEY" -d '{"question": "2+2?", "answer": "4"}'

Like a model server, it lets in only clients with a key when `inbound_api_keys_env` is set:
whoever reaches it spends the judge model's quota.

The handle methods are `create_response(body)`, `create_chat_completion(body)` and, with
`handle.options(stream=True)`, `create_response_stream(body)`: bodies and results are the same
JSON objects as over HTTP (a stream's events come in lists, those ready together: one Ray object per
batch, not per token), and failures raise the same `OpenAIError` (status, code, message).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.

import json
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve import Application

from ..config import Inbound
from ..errors import OpenAIError
from ..http import Gate, error_response
from ..serve_config import DEPLOYMENT

api = FastAPI()

GRADE_SCHEMA = {
    "type": "object",
    "properties": {"correct": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["correct", "reason"],
    "additionalProperties": False,
}


@serve.deployment(max_ongoing_requests=1000)
@serve.ingress(api)
class Judge:
    def __init__(self, model_app: str, inbound_api_keys_env: str | None) -> None:
        self._model = serve.get_deployment_handle(DEPLOYMENT, app_name=model_app)
        self._gate = Gate(Inbound(inbound_api_keys_env=inbound_api_keys_env).inbound_keys())

    @api.post("/grade")
    async def grade(self, request: Request) -> Response:
        try:
            self._gate.check(request)
        except OpenAIError as exc:
            return error_response(exc)
        item = await request.json()
        body = {
            "instructions": "You grade answers. Reply with JSON: is the answer correct, and why.",
            "input": f"Question: {item['question']}\nAnswer: {item['answer']}",
            "text": {"format": {"type": "json_schema", "name": "grade", "schema": GRADE_SCHEMA, "strict": True}},
        }
        try:
            response: dict[str, Any] = await self._model.create_response.remote(body)
        except OpenAIError as exc:
            return error_response(exc)
        text = next(
            part["text"]
            for item in response["output"]
            if item["type"] == "message"
            for part in item["content"]
            if part["type"] == "output_text"
        )
        return JSONResponse({"grade": json.loads(text), "usage": response["usage"]})


def build_app(args: dict[str, Any]) -> Application:
    # mypy does not apply class decorators; at runtime the class is a serve.Deployment.
    return cast(serve.Deployment, Judge).bind(args.get("model_app", "judge_model"), args.get("inbound_api_keys_env"))
