"""OpenAI's Responses API at the edge, the stateless subset: requests in, responses and events out.

- `to_chat(body)`: a `responses.create` request as the OpenAI chat request the gateway
  routes. `input` is a string or a list of items: messages (`{role, content}` with a string or
  `input_text` / `output_text` / `input_image` parts), `function_call` and
  `function_call_output` items; `instructions` becomes the system message; function `tools`,
  `tool_choice`, `parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`, `user`,
  `text.format` (JSON mode and JSON schema) and `metadata` (the gateway's, as on chat) are
  translated. The gateway keeps no conversation state: `previous_response_id`,
  `conversation`, `store: true` and `background: true` are refused with a 400 that says so;
  built-in tools (web search, file search, computer use...) are refused by name.
- `to_response(resp, request, ...)`: an OpenAI `chat.completion` as a `response` object
  (`message` and `function_call` output items, `usage`, `status` / `incomplete_details`).
- `ResponsesEvents`: a `policyengine.gateway.StreamEncoder` that writes the gateway's chunks as
  the Responses stream events (`response.created`, `response.in_progress`,
  `response.output_item.added` / `.done`, `response.content_part.added` / `.done`,
  `response.output_text.delta` / `.done`, `response.function_call_arguments.delta` / `.done`,
  `response.completed`; `response.failed` for a stream that broke). One instance per stream.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from policyengine.api.dialects import DialectError

__all__ = ["ResponsesEvents", "response_id", "to_chat", "to_response"]

_STATEFUL = {
    "previous_response_id": "previous_response_id is not supported: this gateway's Responses API is stateless "
                            "(it stores no responses); send the whole conversation in `input`",
    "conversation": "conversation is not supported: this gateway's Responses API is stateless; send the whole "
                    "conversation in `input`",
}
_PASS = ("temperature", "top_p", "parallel_tool_calls", "user")


def response_id(decision_id: str) -> str:
    """The response id of a decision's answer."""
    return "resp_" + decision_id.replace("-", "")


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DialectError(f"{where} must be a string or a list of content parts", where)
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        w = f"{where}[{j}]"
        if not isinstance(p, dict) or not isinstance(p.get("type"), str):
            raise DialectError(f"{w} must be a content part with a string 'type'", w)
        t = p["type"]
        if t in ("input_text", "output_text", "text"):
            if not isinstance(p.get("text"), str):
                raise DialectError(f"{w}.text must be a string", f"{w}.text")
            parts.append({"type": "text", "text": p["text"]})
        elif t == "input_image":
            url = p.get("image_url")
            if not isinstance(url, str):
                raise DialectError(f"{w}.image_url must be a URL or data: URL (file_id needs stored files, which "
                                   "this gateway does not keep)", f"{w}.image_url")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": p.get("detail") or "auto"}})
        elif t == "refusal":
            parts.append({"type": "text", "text": str(p.get("refusal") or "")})
        else:
            raise DialectError(f"{w}: content parts of type {t!r} are not supported through the gateway", f"{w}.type")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _items(items: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, it in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(it, dict):
            raise DialectError(f"{where} must be an object (a message or a function_call item)", where)
        kind = it.get("type", "message" if "role" in it else None)
        if kind == "message":
            role = it.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise DialectError(f"{where}.role must be user, assistant, system or developer", f"{where}.role")
            out.append({"role": role, "content": _content(it.get("content"), f"{where}.content")})
        elif kind == "function_call":
            cid, name = it.get("call_id"), it.get("name")
            if not isinstance(cid, str) or not isinstance(name, str):
                raise DialectError(f"{where} (function_call) needs a string call_id and name", where)
            args = it.get("arguments") if isinstance(it.get("arguments"), str) else "{}"
            call = {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            prev = out[-1] if out else None
            if prev is not None and prev.get("role") == "assistant" and prev.get("tool_calls") is not None:
                prev["tool_calls"].append(call)  # parallel calls: one assistant message
            elif prev is not None and prev.get("role") == "assistant" and isinstance(prev.get("content"), str):
                prev["tool_calls"] = [call]
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            cid = it.get("call_id")
            if not isinstance(cid, str):
                raise DialectError(f"{where} (function_call_output) needs a string call_id", f"{where}.call_id")
            output = it.get("output")
            if isinstance(output, list):
                output = _content(output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": cid,
                        "content": output if isinstance(output, str) else orjson.dumps(output).decode()})
        elif kind in ("reasoning", "item_reference"):
            if kind == "item_reference":
                raise DialectError(f"{where}: item_reference needs stored items; this gateway is stateless",
                                   f"{where}.type")
            continue  # reasoning items of an earlier turn: the upstream has no use for them
        else:
            raise DialectError(f"{where}: input items of type {kind!r} are not supported through the gateway",
                               f"{where}.type")
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise DialectError("'tools' must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function":
            kind = t.get("type") if isinstance(t, dict) else None
            raise DialectError(f"tools[{i}]: only function tools are supported through the gateway (got {kind!r}; "
                               "built-in tools run on OpenAI's servers)", f"tools[{i}].type")
        if not isinstance(t.get("name"), str):
            raise DialectError(f"tools[{i}].name must be a string", f"tools[{i}].name")
        fn: dict[str, Any] = {"name": t["name"], "parameters": t.get("parameters") or {"type": "object"}}
        if isinstance(t.get("description"), str):
            fn["description"] = t["description"]
        if isinstance(t.get("strict"), bool):
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(tc: Any) -> Any:
    if tc in ("auto", "none", "required"):
        return tc
    if isinstance(tc, dict) and tc.get("type") == "function" and isinstance(tc.get("name"), str):
        return {"type": "function", "function": {"name": tc["name"]}}
    raise DialectError("'tool_choice' must be auto, none, required or {type: function, name}", "tool_choice")


def _text_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise DialectError("'text' must be an object", "text")
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise DialectError("text.format must be text, json_object or json_schema", "text.format")


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request for a Responses request; raises `DialectError` naming the field."""
    for k, why in _STATEFUL.items():
        if body.get(k) is not None:
            raise DialectError(why, k)
    if body.get("store") is True:
        raise DialectError("store must be false or absent: this gateway's Responses API is stateless (it stores no "
                           "responses)", "store")
    if body.get("background") is True:
        raise DialectError("background responses need stored state; this gateway's Responses API is stateless",
                           "background")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise DialectError("'model' must be a string", "model")
    inp = body.get("input")
    if isinstance(inp, str):
        if not inp:
            raise DialectError("'input' must not be empty", "input")
        msgs: list[dict[str, Any]] = [{"role": "user", "content": inp}]
    elif isinstance(inp, list) and inp:
        msgs = _items(inp)
    else:
        raise DialectError("'input' is required: a string or a non-empty list of input items", "input")
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise DialectError("'instructions' must be a string", "instructions")
        msgs.insert(0, {"role": "system", "content": instructions})
    if not any(m.get("role") in ("user", "tool") for m in msgs):
        raise DialectError("'input' holds no user message or function call output", "input")
    chat: dict[str, Any] = {"model": model or "auto", "messages": msgs}
    mot = body.get("max_output_tokens")
    if mot is not None:
        if not isinstance(mot, int) or isinstance(mot, bool) or mot < 1:
            raise DialectError("'max_output_tokens' must be a positive integer", "max_output_tokens")
        chat["max_tokens"] = mot
    for k in _PASS:
        if body.get(k) is not None:
            chat[k] = body[k]
    if "stream" in body:
        if not isinstance(body["stream"], bool):
            raise DialectError("'stream' must be true or false", "stream")
        chat["stream"] = body["stream"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("text") is not None:
        rf = _text_format(body["text"])
        if rf is not None:
            chat["response_format"] = rf
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise DialectError("'metadata' must be an object", "metadata")
        chat["metadata"] = meta
    return chat


# ------------------------------------------------------------------------------ answers


def _usage(usage: Any) -> dict[str, Any]:
    u = usage if isinstance(usage, dict) else {}
    i, o = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {"input_tokens": i, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": o,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o}


def _envelope(request: dict[str, Any], rid: str, model: str, created: int, status: str) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": created, "status": status, "model": model,
            "output": [], "error": None, "incomplete_details": None, "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"), "metadata": request.get("metadata") or {},
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "temperature": request.get("temperature"), "top_p": request.get("top_p"),
            "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [],
            "text": request.get("text") or {"format": {"type": "text"}}, "store": False, "truncation": "disabled",
            "usage": None}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _finish(env: dict[str, Any], finish_reason: str | None) -> None:
    if finish_reason == "length":
        env["status"], env["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        env["status"], env["incomplete_details"] = "incomplete", {"reason": "content_filter"}
    else:
        env["status"] = "completed"


def to_response(resp: dict[str, Any], request: dict[str, Any], *, decision_id: str,
                model: str | None) -> dict[str, Any]:
    """An OpenAI `chat.completion` as a Responses `response` object. The gateway's own report
    (tool-call verdicts, a review case) stays in `policyengine`."""
    rid = response_id(decision_id)
    env = _envelope(request, rid, model or str(resp.get("model") or ""), int(resp.get("created") or time.time()),
                    "completed")
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content = msg.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    hexid = rid[5:]
    if isinstance(content, str) and content:
        env["output"].append(_message_item(f"msg_{hexid}", content))
    for n, tc in enumerate(msg.get("tool_calls") or ()):
        fn = (tc or {}).get("function") or {}
        env["output"].append(_call_item(f"fc_{hexid}_{n}", tc.get("id") or f"call_{n}", fn.get("name") or "",
                                        fn.get("arguments") or "{}"))
    _finish(env, choice.get("finish_reason"))
    env["usage"] = _usage(resp.get("usage"))
    if resp.get("policyengine"):
        env["policyengine"] = resp["policyengine"]
    return env


class ResponsesEvents:
    """The gateway's chunks written as Responses stream events (a `StreamEncoder`; one per stream).

    Invariants: `response.created` and `response.in_progress` come first; every output item is
    announced by `response.output_item.added` and closed by `response.output_item.done` (with
    the item complete) before the next is added; `sequence_number` counts every event from 0;
    `done()` closes the open item and sends `response.completed` with every item and the
    usage; an in-band error is `response.failed` and nothing follows it.
    """

    __slots__ = ("_args", "_created", "_env", "_fin", "_item", "_n", "_open", "_pe", "_seq", "_text", "_tool_index")

    def __init__(self, request: dict[str, Any], *, decision_id: str, model: str | None) -> None:
        rid = response_id(decision_id)
        self._env = _envelope(request, rid, model or "", int(time.time()), "in_progress")
        self._seq = 0
        self._n = 0  # items made so far (ids)
        self._created = False
        self._open: str | None = None  # "message" | "function_call" while an item is open
        self._item: dict[str, Any] = {}
        self._text: list[str] = []
        self._args: list[str] = []
        self._tool_index: int | None = None
        self._pe: dict[str, Any] | None = None
        self._fin: str | None = None  # the upstream's finish_reason

    def _ev(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        if self._created:
            return []
        self._created = True
        if not self._env["model"] and isinstance(chunk.get("model"), str):
            self._env["model"] = chunk["model"]
        return [self._ev("response.created", response=dict(self._env)),
                self._ev("response.in_progress", response=dict(self._env))]

    def _index(self) -> int:
        return len(self._env["output"])

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        out: list[bytes] = []
        idx, item = self._index(), self._item
        if self._open == "message":
            text = "".join(self._text)
            out.append(self._ev("response.output_text.done", item_id=item["id"], output_index=idx, content_index=0,
                                text=text, logprobs=[]))
            part = {"type": "output_text", "text": text, "annotations": []}
            out.append(self._ev("response.content_part.done", item_id=item["id"], output_index=idx,
                                content_index=0, part=part))
            done = _message_item(item["id"], text)
        else:
            args = "".join(self._args)
            out.append(self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=idx,
                                arguments=args, name=item["name"]))
            done = _call_item(item["id"], item["call_id"], item["name"], args)
        out.append(self._ev("response.output_item.done", output_index=idx, item=done))
        self._env["output"].append(done)
        self._open, self._item, self._text, self._args, self._tool_index = None, {}, [], [], None
        return out

    def _new_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._env['id'][5:]}_{self._n}"

    def chunk(self, obj: dict[str, Any]) -> bytes:
        """The events for one OpenAI chunk (or an in-band error object)."""
        if "error" in obj and "choices" not in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
            out = self._start({})
            env = {**self._env, "status": "failed",
                   "error": {"code": str(err.get("code") or "server_error"),
                             "message": str(err.get("message") or "stream failed")}}
            if err.get("decision_id"):
                env["policyengine"] = {"decision_id": err["decision_id"]}
            out.append(self._ev("response.failed", response=env))
            return b"".join(out)
        out = self._start(obj)
        if isinstance(obj.get("policyengine"), dict):
            self._pe = {**(self._pe or {}), **obj["policyengine"]}
        if isinstance(obj.get("usage"), dict):
            self._env["usage"] = _usage(obj["usage"])
        for ch in obj.get("choices") or ():
            if not isinstance(ch, dict) or ch.get("index", 0) != 0:
                continue
            delta = ch.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open != "message":
                    out += self._close()
                    self._open = "message"
                    self._item = _message_item(self._new_id("msg"), "", status="in_progress")
                    idx = self._index()
                    out.append(self._ev("response.output_item.added", output_index=idx, item=self._item))
                    out.append(self._ev("response.content_part.added", item_id=self._item["id"], output_index=idx,
                                        content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
                self._text.append(text)
                out.append(self._ev("response.output_text.delta", item_id=self._item["id"], output_index=self._index(),
                                    content_index=0, delta=text, logprobs=[]))
            for tc in delta.get("tool_calls") or ():
                if not isinstance(tc, dict):
                    continue
                fn = tc.get("function") or {}
                idx = tc.get("index", 0)
                if self._open != "function_call" or (tc.get("id") and idx != self._tool_index):
                    out += self._close()
                    self._open, self._tool_index = "function_call", idx
                    self._item = _call_item(self._new_id("fc"), tc.get("id") or f"call_{idx}", fn.get("name") or "",
                                            "", status="in_progress")
                    out.append(self._ev("response.output_item.added", output_index=self._index(), item=self._item))
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    self._args.append(args)
                    out.append(self._ev("response.function_call_arguments.delta", item_id=self._item["id"],
                                        output_index=self._index(), delta=args))
            if ch.get("finish_reason"):
                self._fin = ch["finish_reason"]
        return b"".join(out)

    def done(self) -> bytes:
        """The end of a complete answer: the open item closed, then `response.completed`."""
        out = self._start({})
        out += self._close()
        env = dict(self._env)
        _finish(env, self._fin)
        if env["usage"] is None:
            env["usage"] = _usage(None)
        if self._pe:
            env["policyengine"] = self._pe
        kind = "response.completed" if env["status"] == "completed" else "response.incomplete"
        out.append(self._ev(kind, response=env))
        return b"".join(out)

    def comment(self, text: str) -> bytes:
        """An SSE comment (a keep-alive while a held stream waits for its reviewer)."""
        return b": " + text.replace("\n", " ").encode() + b"\n\n"
