"""A light client of Streamlit's browser protocol: one session of the dashboard without a browser (load benchmarks).

One :class:`StreamlitSession` is one browser tab: a websocket to ``/_stcore/stream`` over which it sends the
``BackMsg`` a browser sends and reads the ``ForwardMsg`` s the script run writes::

    async with StreamlitSession("http://127.0.0.1:8501") as s:
        home = await s.rerun(query="p=abc")                  # what opening http://…/?p=abc does
        prefs = await s.rerun(page="preferences")            # a sidebar click: url path or title
        r = await s.rerun(widgets={"Export format": "csv", "Prepare export": True})  # by label, key or id
        r.elapsed_s, r.texts, r.errors, r.widgets, r.fragments
        await s.rerun_fragment()                             # what a page's run_every timer sends

The protocol in Streamlit 1.67 (starlette server, streamlit/web/server/starlette/starlette_websocket.py):

* the handshake needs no cookie and no token: the subprotocol list is ``streamlit[, xsrf token[, session id]]``,
  and the token only guards the login cookie; an ``Origin`` equal to the host is accepted (as is none);
* the server runs nothing until the client sends ``BackMsg.rerun_script``, a ``ClientState``: the query string,
  the widgets' values (``WidgetStates``; a button is ``trigger_value=True`` in the one request it was clicked; a
  browser sends every widget's, this client those it set: the server keeps the others' last values),
  the page (``page_script_hash``, or on a first load the url path as ``page_name``), ``fragment_id`` and
  ``is_auto_rerun`` for a fragment's timer, the hashes of the big elements the client keeps (it is then sent
  ``ref_hash`` in their place), and the browser's ``context_info``;
* a run answers ``new_session`` (a run starts), ``navigation`` (the pages, and under ``st.navigation`` the page it
  ran: ``new_session`` names the main script), ``delta`` s (``new_element`` at a
  ``metadata.delta_path``; ``delta.fragment_id`` inside a fragment), ``auto_rerun`` (interval and fragment id of
  each ``st.fragment(run_every=…)``), ``page_info_changed`` (a query string the script set) and last
  ``script_finished``. ``FINISHED_EARLY_FOR_RERUN`` (an ``st.rerun``) is followed by a new run, awaited too.

Not imitated: the static files and ``/_stcore/host-config`` a page fetches first, uploads (an HTTP PUT), the
heartbeat, and query parameters bound to widgets (a page change here drops the whole query string).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState, ContextInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.NumberInput_pb2 import NumberInput
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import connect

# The WidgetState field each widget's value travels in (the value_type its st.* function registers)
VALUE_FIELDS = {"button": "trigger_value", "download_button": "trigger_value", "checkbox": "bool_value",
                "text_input": "string_value", "text_area": "string_value", "selectbox": "string_value",
                "radio": "string_value", "color_picker": "string_value", "time_input": "string_value",
                "number_input": "double_value", "multiselect": "string_array_value",
                "date_input": "string_array_value", "button_group": "string_array_value",
                "chat_input": "chat_input_value"}
TRIGGERS = {"trigger_value", "string_trigger_value", "chat_input_value", "json_trigger_value"}  # sent once
TEXTS = {"markdown", "heading", "alert", "text", "toast"}  # elements whose `body` a Run keeps (captions are markdown)


@dataclass(frozen=True)
class Widget:
    """A widget as the page drew it: its id (what a WidgetState names), kind (the Element field) and label."""

    id: str
    kind: str  # "button", "text_input", "selectbox", "slider", ...
    label: str  # a chat input's placeholder
    options: tuple[str, ...] = ()  # as shown (format_func applied): what a selectbox or radio is sent
    fragment_id: str = ""  # "" outside a fragment
    proto: Any = field(default=None, compare=False, repr=False)  # the element's message (streamlit/proto/*.proto)

    @property
    def key(self) -> str | None:
        """The key given in the script (ids are ``$$ID-<hash>-<key>``)."""
        key = self.id.split("-", 2)[-1]
        return None if key == "None" else key


@dataclass
class Run:
    """What one rerun request brought back: the last run it caused, up to its ``script_finished``."""

    elapsed_s: float = 0.0  # from sending the request to receiving script_finished: the page's render time
    status: str = ""  # FINISHED_SUCCESSFULLY, FINISHED_FRAGMENT_RUN_SUCCESSFULLY or FINISHED_WITH_COMPILE_ERROR
    texts: list[str] = field(default_factory=list)  # markdown, captions, headings, alerts, metrics: page order
    alerts: list[tuple[str, str]] = field(default_factory=list)  # ("ERROR" | "WARNING" | "INFO" | "SUCCESS", body)
    errors: list[str] = field(default_factory=list)  # exceptions on the page and compile errors: "Type: message"
    widgets: dict[str, Widget] = field(default_factory=dict)  # by id
    fragments: dict[str, float] = field(default_factory=dict)  # timers this run set: fragment id -> seconds
    query_string: str | None = None  # the query string the script set (st.query_params), if it set one
    page: str = ""  # the script hash of the page it ran
    fragment_run: bool = False
    messages: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and self.status != "FINISHED_WITH_COMPILE_ERROR"

    def shows(self, text: str) -> bool:
        """Whether some text on the page contains ``text``."""
        return any(text in t for t in self.texts)


def widget_state(widget: Widget, value: Any) -> WidgetState:
    """The WidgetState a browser sends for ``value`` in ``widget``: a button takes True, a selectbox, radio or
    select_slider the option as shown, a multiselect a list of them, a slider a number or a (low, high) pair."""
    state = WidgetState(id=widget.id)
    name = ("string_array_value" if widget.options else "double_array_value") if widget.kind == "slider" \
        else VALUE_FIELDS.get(widget.kind)
    if widget.kind == "number_input" and widget.proto is not None and widget.proto.data_type == NumberInput.INT:
        name = "int_value"  # what the browser sends for whole numbers
    if name is None:
        raise ValueError(f"no value mapping for a {widget.kind} ({widget.label!r}): pass a WidgetState")
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if widget.options and widget.kind != "button_group" and not set(map(str, values)) <= set(widget.options):
        raise ValueError(f"{value!r} is not among the options of {widget.label!r}: {widget.options}")
    if name == "chat_input_value":
        state.chat_input_value.data = value
    elif name.endswith("_array_value"):
        getattr(state, name).data.extend(map(str, values) if name == "string_array_value" else values)
    else:
        setattr(state, name, str(value) if name == "string_value" else value)
    return state


class StreamlitSession:
    """One browser session of a Streamlit server (``base_url`` like ``http://127.0.0.1:8501``), one run at a time."""

    def __init__(self, base_url: str, timeout_s: float = 300.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s  # longest wait for a run's script_finished
        self.pages: dict[str, str] = {}  # title and url path -> page script hash (from `navigation`)
        self.page = ""  # script hash of the page shown
        self.query_string = ""  # the address bar's, as the last run left it
        self.fragments: dict[str, float] = {}  # the page's timers: fragment id -> seconds between reruns
        self._widgets: dict[str, dict[str, Widget]] = {}  # page hash -> the widgets its last run drew, by id
        self._states: dict[str, WidgetState] = {}  # widget values the browser holds, sent with every rerun
        self._cache: dict[str, list] = {}  # hash -> [cacheable ForwardMsg, number of the run that last sent it]
        self._full_runs = 0
        self._cache_runs = 2  # runs a cached element outlives its last use (new_session.config)
        self._lock = asyncio.Lock()
        self._ws = None

    async def __aenter__(self) -> StreamlitSession:
        # max_size=None: a plot or a table is one message, often over the library's 1 MiB default
        self._ws = await connect("ws" + self.base_url.removeprefix("http") + "/_stcore/stream",
                                 subprotocols=["streamlit"], origin=self.base_url, max_size=None)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._ws.close()

    @property
    def widgets(self) -> dict[str, Widget]:
        """The widgets the shown page drew last, by id."""
        return self._widgets.get(self.page, {})

    def widget(self, name: str, page: str | None = None) -> Widget:
        """A widget of a page (the shown one by default) by its id, label or key."""
        drawn = list(self._widgets.get(self.page if page is None else page, {}).values())
        for match in ([w for w in drawn if w.id == name], [w for w in drawn if w.label == name],
                      [w for w in drawn if w.key == name]):
            if len(match) > 1:
                raise KeyError(f"{len(match)} widgets are called {name!r}: name one by key or id "
                               f"({[w.key or w.id for w in match]})")
            if match:
                return match[0]
        raise KeyError(f"no widget {name!r} on the page; it has {[w.label for w in drawn]}")

    async def rerun(self, query: str | None = None, page: str | None = None,
                    widgets: dict[str, Any] | None = None, timeout_s: float | None = None) -> Run:
        """A run: a first load, a page change (``page``: url path or title) or a widget change.

        ``query`` replaces the query string (``None`` keeps the shown page's; a page change drops it, as the
        sidebar does). ``widgets``: name (label, key or id, on the page the run goes to) -> value or WidgetState;
        widgets that all sit in one fragment rerun only that fragment, as in a browser.
        """
        target = self.page if page is None else self.pages.get(page, "")
        state = ClientState(page_script_hash=target)
        if page is not None and not target:  # before the first run: a browser opening http://…/<page>
            state.page_name = page
        if target != self.page:  # the browser forgets the values of the page it leaves
            self._states.clear()
            self.query_string = ""
        if query is not None:
            self.query_string = query.removeprefix("?")
        fragments = set()
        for name, value in (widgets or {}).items():
            found = self.widget(name, target)
            self._states[found.id] = value if isinstance(value, WidgetState) else widget_state(found, value)
            fragments.add(found.fragment_id)
        if len(fragments) == 1 and "" not in fragments and target == self.page:
            state.fragment_id = fragments.pop()  # widgets of one fragment rerun that fragment only
        return await self._request(state, timeout_s)

    async def rerun_fragment(self, fragment_id: str | None = None, timeout_s: float | None = None) -> Run:
        """What a fragment's run_every timer sends (the page's first timer by default). The server answers
        nothing for a fragment it no longer holds: that is a TimeoutError after ``timeout_s``."""
        fragment_id = fragment_id or next(iter(self.fragments), None)
        if fragment_id is None:
            raise KeyError("the page shown has no run_every fragment")
        return await self._request(ClientState(page_script_hash=self.page, fragment_id=fragment_id,
                                               is_auto_rerun=True), timeout_s)

    async def _request(self, state: ClientState, timeout_s: float | None) -> Run:
        async with self._lock:  # one run at a time, as this client reads the answers in order
            return await self._send(state, timeout_s)

    async def _send(self, state: ClientState, timeout_s: float | None) -> Run:
        state.query_string = self.query_string
        state.widget_states.widgets.extend(self._states.values())
        self._states = {i: s for i, s in self._states.items() if s.WhichOneof("value") not in TRIGGERS}
        state.cached_message_hashes.extend(self._cache)
        path = next((p for p, h in self.pages.items() if h == state.page_script_hash), state.page_name)
        state.context_info.CopyFrom(ContextInfo(timezone="UTC", locale="en-US", color_scheme="light", url=(
            f"{self.base_url}/{path}" + (f"?{self.query_string}" if self.query_string else ""))))
        message = BackMsg()
        message.rerun_script.CopyFrom(state)
        started = time.perf_counter()
        await self._ws.send(message.SerializeToString())
        run = await self._read(deadline=started + (timeout_s or self.timeout_s))
        run.elapsed_s = time.perf_counter() - started
        self._finish(run)
        return run

    async def _read(self, deadline: float) -> Run:
        run, shown, started = Run(), {}, False
        while True:
            data = await asyncio.wait_for(self._ws.recv(), max(deadline - time.perf_counter(), 0.001))
            run.messages, run.bytes = run.messages + 1, run.bytes + len(data)
            msg = self._resolve(ForwardMsg.FromString(data))
            kind = msg.WhichOneof("type")
            if kind == "new_session":  # a run starts: what came before it is gone, but for the address bar
                started, shown = True, {}  # (a run that sets st.query_params, then st.rerun(), sets it for good)
                run = Run(messages=run.messages, bytes=run.bytes, query_string=run.query_string)
                run.page, run.fragment_run = msg.new_session.page_script_hash, bool(msg.metadata.run.fragment_ids)
                if msg.new_session.config.max_cached_message_age:
                    self._cache_runs = msg.new_session.config.max_cached_message_age
            elif kind == "delta":
                where = tuple(msg.metadata.delta_path)
                if msg.delta.WhichOneof("type") == "add_block":  # a container replaces what was at and below it
                    shown = {p: e for p, e in shown.items() if p[:len(where)] != where}
                elif msg.delta.WhichOneof("type") == "new_element":
                    shown[where] = (msg.delta.new_element, msg.delta.fragment_id)
            elif kind == "navigation":  # the page list (replaced by st.navigation's) and the page it ran
                self.pages = {name: p.page_script_hash for p in msg.navigation.app_pages
                              for name in (p.page_name, p.url_pathname)}
                run.page = msg.navigation.page_script_hash
            elif kind == "page_info_changed":
                run.query_string = msg.page_info_changed.query_string
            elif kind == "auto_rerun":
                run.fragments[msg.auto_rerun.fragment_id] = msg.auto_rerun.interval
            elif kind == "stop_auto_rerun":
                for fragment_id in msg.stop_auto_rerun.fragment_ids:
                    self.fragments.pop(fragment_id, None)
            elif kind == "session_event" and msg.session_event.HasField("script_compilation_exception"):
                error = msg.session_event.script_compilation_exception
                run.errors.append(f"{error.type}: {error.message}")
            elif kind == "script_finished" and started and msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                run.status = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
                break
        for element, fragment_id in shown.values():
            self._collect(run, element, fragment_id)
        return run

    @staticmethod
    def _collect(run: Run, element, fragment_id: str) -> None:
        kind = element.WhichOneof("type")
        part = getattr(element, kind)
        if kind in TEXTS:
            run.texts.append(part.body)
            if kind == "alert":
                run.alerts.append((part.Format.Name(part.format), part.body))
        elif kind == "metric":
            run.texts.append(f"{part.label}: {part.body}")
        elif kind == "exception":
            run.errors.append(f"{part.type}: {part.message}")
        elif "id" in part.DESCRIPTOR.fields_by_name and part.id:
            fields = part.DESCRIPTOR.fields_by_name
            label = part.label if "label" in fields else getattr(part, "placeholder", "")
            options = tuple(part.options) if "options" in fields else ()
            run.widgets[part.id] = Widget(part.id, kind, label, options, fragment_id, part)

    def _finish(self, run: Run) -> None:
        """The session after a run: the page shown, its widgets and timers, the address bar, the message cache."""
        if run.query_string is not None:
            self.query_string = run.query_string
        if run.fragment_run:  # a fragment redraws part of the page
            self._widgets.setdefault(self.page, {}).update(run.widgets)
            self.fragments.update(run.fragments)
            return
        self.page, self.fragments = run.page, dict(run.fragments)
        self._widgets[run.page] = dict(run.widgets)
        self._states = {i: s for i, s in self._states.items() if i in run.widgets}
        self._full_runs += 1
        self._cache = {h: e for h, e in self._cache.items() if self._full_runs - e[1] <= self._cache_runs}

    def _resolve(self, msg: ForwardMsg) -> ForwardMsg:
        """A reference to an element this client keeps (``ref_hash``) -> the element; keep the cacheable ones."""
        if msg.WhichOneof("type") == "ref_hash":
            entry = self._cache[msg.ref_hash]
            entry[1] = self._full_runs
            full = ForwardMsg()
            full.CopyFrom(entry[0])
            full.metadata.CopyFrom(msg.metadata)
            return full
        if msg.metadata.cacheable and msg.hash:
            self._cache[msg.hash] = [msg, self._full_runs]
        return msg


async def _main(base_url: str, *pages: str) -> None:
    async with StreamlitSession(base_url) as session:
        for page in pages or ("",):
            run = await session.rerun(page=page or None)
            print(f"{page or 'default page'}: {run.status} in {run.elapsed_s:.3f} s, {run.messages} messages, "
                  f"{len(run.widgets)} widgets, errors {run.errors}\n  " + "\n  ".join(t[:100] for t in run.texts))


if __name__ == "__main__":  # python benchmarks/st_client.py http://127.0.0.1:8501 [page ...]
    import sys

    asyncio.run(_main(*sys.argv[1:]))
