"""Fuzzing the WebSocket framing: garbage, wrong types, odd ids, unknown methods, deep nesting,
huge and binary frames. The server must answer per the contract or stay silent, never crash,
and other connections must not notice: another client's call always answers in < 100 ms.

Then every field the server parses or stores gets long strings made to hurt a parser (digits
then garbage, runs of `!`, blanks, `*` globs, NUL...) up to a megabyte, and deep nesting up
to 900 levels: still a well-formed answer, still < 100 ms for the bystander, and what was
stored never breaks another user's answer.

Hypothesis drives a synchronous test, so the server runs in its own thread and event loop for
the whole module; each example opens a fresh client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import slowest_answer_during
from tests.server.conftest import RunningServer, make_config, running_server
from tests.server.xo_client import XoClient

BYSTANDER_BUDGET_S = 0.1

METHODS = [
    "system.getVersion",
    "system.getMethodsInfo",
    "system.methodSignature",
    "session.signIn",
    "session.getUser",
    "xo.getAllObjects",
    "token.create",
    "server.add",
    "nope",
    "",
    "system.",
]


class ServerThread:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(20), "server thread did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with running_server(make_config(self._data_dir)) as srv:
                self.server: RunningServer = srv
                self.port = srv.port
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # reported by the tests
            self.error = exc
            self._ready.set()


@pytest.fixture(scope="module")
def threaded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("fuzz")) as srv:
        yield srv


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return True
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def expects_reply(frame: str | bytes) -> Any:
    """Independent oracle (xo-server-api.md 1.2): the id a reply must carry, or a sentinel."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return NO_REPLY
    if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
        return NO_REPLY
    if "jsonrpc" in msg and msg["jsonrpc"] != "2.0":
        return NO_REPLY
    if "params" in msg and not isinstance(msg["params"], dict | list):
        return NO_REPLY
    if "id" not in msg or not _valid_id(msg["id"]):
        return NO_REPLY
    return msg["id"]


NO_REPLY = object()


async def exchange(port: int, frames: list[str | bytes]) -> None:
    url = f"ws://127.0.0.1:{port}/api/"
    bystander = await XoClient.connect(url)
    client = await XoClient.connect(url)
    try:
        expected = [expects_reply(f) for f in frames]
        replies = [e for e in expected if e is not NO_REPLY]

        async def send_all() -> None:
            for frame in frames:
                if isinstance(frame, bytes):
                    await client.ws.send_bytes(frame)
                else:
                    await client.ws.send_str(frame)
            sentinel = await client.request("system.getVersion", req_id="sentinel")
            assert sentinel["result"] == "0.1"
            # Async methods (signIn) may answer after the sentinel: wait for the count.
            for _ in range(200):
                if len(client.frames) >= len(replies) + 1:
                    break
                await asyncio.sleep(0.01)

        _, slowest = await slowest_answer_during(
            lambda: bystander.call("system.getVersion"), send_all()
        )
        # Reading and parsing a frame costs its size (tens of ms per MiB, more on a busy
        # machine): the 10 MiB frames of test_pathological_frames get that on top.
        mib = sum(len(f) for f in frames) / 2**20
        assert slowest < BYSTANDER_BUDGET_S + 0.05 * mib, (slowest, mib)
        got = [orjson.loads(f) for f in client.frames if orjson.loads(f).get("id") != "sentinel"]
        assert len(got) == len(replies), (frames, client.frames)
        for message in got:
            assert message["jsonrpc"] == "2.0"
            if "error" in message:
                assert list(message) == ["error", "id", "jsonrpc"]
                assert type(message["error"]["code"]) is int
                assert type(message["error"]["message"]) is str
            else:
                assert list(message) == ["id", "jsonrpc", "result"]
        assert sorted(map(repr, (m["id"] for m in got))) == sorted(map(repr, replies))
        # The other connection never noticed.
        assert await bystander.call("system.getVersion") == "0.1"
    finally:
        await client.close()
        await bystander.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.just(-9007199254740991),
    st.lists(st.integers(), max_size=2),
)
requests = st.fixed_dictionaries(
    {"method": st.one_of(st.sampled_from(METHODS), st.text(max_size=15), json_values)},
    optional={
        "id": ids,
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2.0, None, ""]),
        "params": st.one_of(
            json_values,
            st.dictionaries(
                st.sampled_from(["email", "password", "token", "filter", "limit", "method", "x"]),
                json_values,
                max_size=3,
            ),
        ),
    },
)


def encode(message: Any) -> str:
    # The stdlib lets through what orjson refuses (NaN, huge ints): the server must cope.
    return json.dumps(message)


fuzz_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.timeout(120)
@fuzz_settings
@given(frames=st.lists(requests.map(encode), min_size=1, max_size=4))
def test_fuzzed_requests(threaded_server: ServerThread, frames: list[str]) -> None:
    asyncio.run(exchange(threaded_server.port, frames))
    assert threaded_server.error is None


@pytest.mark.timeout(120)
@fuzz_settings
@given(
    frames=st.lists(
        st.one_of(
            st.text(max_size=50),
            st.binary(max_size=50),
            json_values.map(encode),
            json_values.map(lambda v: encode(v).encode()),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_garbage(threaded_server: ServerThread, frames: list[str | bytes]) -> None:
    asyncio.run(exchange(threaded_server.port, frames))
    assert threaded_server.error is None


@pytest.mark.timeout(60)
def test_pathological_frames(threaded_server: ServerThread) -> None:
    deep = (
        '{"id":1,"jsonrpc":"2.0","method":"system.getVersion","params":'
        + "[" * 5000
        + "]" * 5000
        + "}"
    )
    deep_ok = (
        '{"id":2,"jsonrpc":"2.0","method":"xo.getAllObjects","params":{"filter":'
        + '{"a":' * 200
        + "1"
        + "}" * 200
        + "}}"
    )
    big_params = orjson.dumps(
        {
            "id": 3,
            "jsonrpc": "2.0",
            "method": "system.methodSignature",
            "params": {"method": "m" * (10 * 1024 * 1024)},
        }
    ).decode()
    big_garbage = "x" * (10 * 1024 * 1024)
    frames: list[str | bytes] = [
        deep,
        deep_ok,
        big_params,
        big_garbage,
        '{"id":1e400,"jsonrpc":"2.0","method":"system.getVersion"}',
        '{"id":123456789012345678901234567890,"jsonrpc":"2.0","method":"system.getVersion"}',
        '{"id":0.5,"jsonrpc":"2.0","method":"system.getVersion"}',
        '{"id":-0.0,"jsonrpc":"2.0","method":"system.getVersion"}',
        b"\x00\x01\x02",
        '{"id":"\\ud800","jsonrpc":"2.0","method":"system.getVersion"}',
    ]
    asyncio.run(exchange(threaded_server.port, frames))
    assert threaded_server.error is None


@pytest.mark.timeout(60)
def test_a_frame_over_the_size_limit_closes_only_that_connection(
    threaded_server: ServerThread,
) -> None:
    async def scenario() -> None:
        url = f"ws://127.0.0.1:{threaded_server.port}/api/"
        bystander = await XoClient.connect(url)
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url)
            with contextlib.suppress(ConnectionError):  # the server may hang up mid-send
                await ws.send_str("y" * (17 * 1024 * 1024))
            msg = await ws.receive(timeout=10)
            assert msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            )
            # 1009 when the close frame makes it back, 1006 when the hang-up wins the race.
            assert ws.close_code in (
                aiohttp.WSCloseCode.MESSAGE_TOO_BIG,
                aiohttp.WSCloseCode.ABNORMAL_CLOSURE,
            )
        assert await bystander.call("system.getVersion") == "0.1"
        await bystander.close()

    asyncio.run(scenario())


# -- parsed and stored fields ---------------------------------------------------------------

# (method, path of the field in params); `$me` is replaced by the signed-in admin's id.
PARSED_FIELDS: list[tuple[str, tuple[str, ...]]] = [
    ("token.create", ("expiresIn",)),
    ("token.create", ("description",)),
    ("token.create", ("client", "id")),
    ("xo.getAllObjects", ("filter",)),
    ("session.signIn", ("email",)),
    ("session.signIn", ("password",)),
    ("user.set", ("preferences", "k")),
    ("user.changePassword", ("oldPassword",)),
    ("user.create", ("email",)),
    ("system.methodSignature", ("method",)),
    ("token.deleteOwn", ("pattern", "description")),
    ("migration.get", ("id",)),
    ("acl.add", ("object",)),
    ("acl.add", ("subject",)),
    ("group.create", ("name",)),
]
STORED_FIELDS: list[tuple[str, tuple[str, ...]]] = [
    ("user.set", ("preferences", "k")),
    ("user.set", ("preferences",)),
    ("token.deleteOwn", ("pattern",)),
    ("xo.getAllObjects", ("filter",)),
    ("token.create", ("client",)),
]
BASE_PARAMS: dict[str, dict[str, Any]] = {
    "session.signIn": {"email": "admin@admin.net", "password": "wrong"},
    "user.set": {"id": "$me"},
    "user.changePassword": {"oldPassword": "x", "newPassword": "admin"},
    "user.create": {"email": "e@x.net", "password": "p"},
    "acl.add": {"subject": "$me", "object": "o", "action": "viewer"},
}
# Pieces repeated to make the strings that hurt parsers: quadratic regexes (digits then
# garbage), recursion (`!`), backtracking (blanks, globs), shell-like quoting, NUL, Unicode.
UNITS = ["1", "!", " ", "a ", "*a", "1.", "\0", "é", '"', "a:b*", "x"]


def nested_value(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def with_field(method: str, path: tuple[str, ...], value: Any, me: str) -> dict[str, Any]:
    params = json.loads(json.dumps(BASE_PARAMS.get(method, {})).replace("$me", me))
    node = params
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return params


async def fields_exchange(
    port: int, token: str, method: str, params: dict[str, Any] | None, flt: Any
) -> None:
    """One call (or a REST listing with ?filter=`flt`): a well-formed answer, a fast bystander,
    and the admin's user.getAll still answering."""
    url = f"ws://127.0.0.1:{port}/api/"
    bystander = await XoClient.connect(url)
    client = await XoClient.connect(url)
    try:
        # A token, not the password: the fuzzed sign-ins' failures throttle password ones.
        await client.call("session.signIn", {"token": token})
        # Encoded before the measurement: this test's own work must not count.
        req_id = client.next_id()
        frame = json.dumps({"id": req_id, "jsonrpc": "2.0", "method": method, "params": params})

        async def call() -> None:
            if params is None:
                token = await client.call("token.create", {"description": "fuzz"})
                async with aiohttp.ClientSession() as http:
                    async with http.get(
                        f"http://127.0.0.1:{port}/rest/v0/vms",
                        params={"filter": flt},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as resp:
                        assert resp.status in (200, 400), resp.status
                        if resp.content_type == "application/json":
                            body = await resp.json()
                            assert isinstance(body, list) or type(body["code"]) is int
                        else:  # a request line over aiohttp's 8190 bytes: its own 400
                            assert resp.status == 400 and len(str(resp.url)) > 8000
                await client.call("token.deleteOwn", {"tokens": [token]})
                return
            response = await client.request_raw(frame, req_id, timeout=20)
            if "error" in response:
                assert type(response["error"]["code"]) is int
                assert type(response["error"]["message"]) is str
            else:
                assert list(response) == ["id", "jsonrpc", "result"]

        _, slowest = await slowest_answer_during(
            lambda: bystander.call("system.getVersion"), call()
        )
        assert slowest < BYSTANDER_BUDGET_S, (method, slowest)
        users = await client.call("user.getAll")  # stored data breaks nobody's answer
        assert any(u["email"] == "admin@admin.net" for u in users)
    finally:
        await client.close()
        await bystander.close()


@pytest.fixture(scope="module")
def admin(threaded_server: ServerThread) -> tuple[str, str]:
    """(the admin's id, a token to sign in with)."""

    async def get() -> tuple[str, str]:
        client = await XoClient.connect(f"ws://127.0.0.1:{threaded_server.port}/api/")
        try:
            me = (await client.sign_in())["id"]
            return me, await client.call("token.create", {"description": "fuzz"})
        finally:
            await client.close()

    return asyncio.run(get())


long_strings = st.builds(
    lambda unit, n, tail: unit * n + tail,
    st.sampled_from(UNITS),
    st.integers(min_value=0, max_value=300_000),
    st.sampled_from(["", "!", "x", " s"]),
)


@pytest.mark.timeout(300)
@fuzz_settings
@given(field=st.sampled_from([*PARSED_FIELDS, ("rest", ("filter",))]), value=long_strings)
def test_long_strings_in_every_parsed_field(
    threaded_server: ServerThread,
    admin: tuple[str, str],
    field: tuple[str, tuple[str, ...]],
    value: str,
) -> None:
    method, path = field
    me, token = admin
    params = None if method == "rest" else with_field(method, path, value, me)
    asyncio.run(fields_exchange(threaded_server.port, token, method, params, value))
    assert threaded_server.error is None


@pytest.mark.timeout(300)
@settings(fuzz_settings, max_examples=25)
@given(
    field=st.sampled_from(STORED_FIELDS),
    depth=st.one_of(
        st.integers(min_value=1, max_value=40), st.integers(min_value=40, max_value=900)
    ),
)
def test_deep_nesting_in_every_stored_field(
    threaded_server: ServerThread,
    admin: tuple[str, str],
    field: tuple[str, tuple[str, ...]],
    depth: int,
) -> None:
    method, path = field
    me, token = admin
    params = with_field(method, path, nested_value(depth), me)
    asyncio.run(fields_exchange(threaded_server.port, token, method, params, None))
    assert threaded_server.error is None
