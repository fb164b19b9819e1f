"""Webhooks in-process, to real HTTP receivers on 127.0.0.1: signed as Standard Webhooks says
(verified with the specification's own library), retried, refused where they must be."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from standardwebhooks import Webhook

from deployments.core.errors import BadParameter
from deployments.core.webhooks import Webhooks, check_callback, sign

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """Answers each POST with the next of `statuses` (the last one repeats)."""

    def __init__(self, statuses: list[int], location: str = "") -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(statuses[min(len(receiver.calls), len(statuses)) - 1])
                if location:
                    self.send_header("location", location)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?source=test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def deliver(url: str, *, retry_for_s: float = 5, **options: object) -> tuple[Webhooks, list[str]]:
    delivered: list[str] = []

    async def scenario() -> Webhooks:
        over = asyncio.Event()

        def ended(job_id: str) -> None:
            delivered.append(job_id)
            over.set()

        hooks = Webhooks(
            secret=SECRET,
            allowed_hosts=["127.0.0.1"],
            timeout_s=5,
            retry_for_s=retry_for_s,
            delivered=ended,
            **options,  # type: ignore[arg-type]
        )
        hooks.send("job1", url, {"id": "job1", "status": "done"})
        await over.wait()
        return hooks

    return asyncio.run(asyncio.wait_for(scenario(), 20)), delivered


def test_a_delivery_is_signed_as_the_specification_s_library_verifies(
    receivers: list[Receiver],
) -> None:
    receivers.append(receiver := Receiver([204]))
    hooks, delivered = deliver(receiver.url)
    assert delivered == ["job1"] and hooks.outcomes == {"delivered": 1}
    ((headers, body),) = receiver.calls
    assert Webhook(SECRET).verify(body, headers) == {"id": "job1", "status": "done"}
    assert headers["webhook-id"] == "msg_job1" and headers["content-type"] == "application/json"
    timestamp = int(headers["webhook-timestamp"])
    assert headers["webhook-signature"] == sign(SECRET, "msg_job1", timestamp, body)


def test_a_receiver_that_fails_first_is_called_again_with_the_same_id(
    receivers: list[Receiver],
) -> None:
    receivers.append(receiver := Receiver([500, 204]))
    hooks, _ = deliver(receiver.url)
    assert hooks.outcomes == {"retried": 1, "delivered": 1}
    assert [h["webhook-id"] for h, _ in receiver.calls] == ["msg_job1", "msg_job1"]
    for headers, body in receiver.calls:
        Webhook(SECRET).verify(body, headers)


def test_a_redirect_is_not_followed_and_the_delivery_is_given_up_in_time(
    receivers: list[Receiver],
) -> None:
    receivers.append(target := Receiver([204]))
    receivers.append(redirecting := Receiver([302], location=target.url))
    hooks, _ = deliver(redirecting.url, retry_for_s=0.5)
    assert hooks.outcomes == {"failed": 1} and target.calls == []


def test_a_name_that_resolves_to_a_metadata_address_is_never_called(
    receivers: list[Receiver],
) -> None:
    receivers.append(receiver := Receiver([204]))

    async def metadata(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]  # what a hostile DNS name answers

    hooks, _ = deliver(receiver.url.replace("127.0.0.1", "hooks.test"), resolve=metadata)
    assert hooks.outcomes == {"refused": 1} and receiver.calls == []


@pytest.mark.parametrize(
    ("url", "allowed", "why"),
    [
        ("http://hooks.example.com/x", [], "not enabled"),
        ("ftp://hooks.example.com/x", ["hooks.example.com"], "http://"),
        ("http://evil.test/x", ["hooks.example.com"], "not in webhook_allowed_hosts"),
        ("http://user:pw@hooks.example.com/x", ["hooks.example.com"], "user name"),
        ("http://169.254.169.254/latest", ["*"], "not in"),
        ("http://169.254.169.254/latest", ["169.254.169.254"], "link-local"),
        ("http://[::ffff:169.254.169.254]/", ["::ffff:169.254.169.254"], "link-local"),
        ("http://[fe80::1]/", ["fe80::1"], "link-local"),
    ],
)
def test_callback_urls_the_service_must_not_call_are_refused(
    url: str, allowed: list[str], why: str
) -> None:
    with pytest.raises(BadParameter, match=why):
        check_callback(url, allowed)


def test_allowed_hosts_match_exactly_or_as_subdomains() -> None:
    allowed = ["hooks.example.com", "*.partner.test"]
    assert check_callback("https://hooks.example.com/a", allowed)
    assert check_callback("https://api.partner.test:8443/b", allowed)
    with pytest.raises(BadParameter):
        check_callback("https://partner.test.evil/b", allowed)
    with pytest.raises(BadParameter):
        check_callback("https://xhooks.example.com/b", allowed)
