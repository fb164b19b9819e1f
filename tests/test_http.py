"""The HTTP layer in-process: Starlette's TestClient before a plain stand-in service, no Ray."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from ipaddress import ip_network

import pytest
from starlette.testclient import TestClient

from deployments.core import errors
from deployments.core.errors import AnimeGANError
from deployments.core.examples import Example
from deployments.core.faces import Box
from deployments.core.imaging import Cut
from deployments.core.jobs import Admitted
from deployments.core.media import Kind, Upload
from deployments.core.options import StylizeOptions
from deployments.core.results import Picture, StyleStatus, Stylized
from deployments.core.scheduler import JobView
from deployments.core.settings import Settings
from deployments.http import build_http_app, client_address, client_name

KEY = "k" * 64
CUT = Cut("face", Box(10, 20, 300, 300))
API_KEY = "http-test-key-0123456789"
LIMIT = 1000  # the stand-in's upload limit, in bytes


class StandIn:
    """Answers like the ingress would, remembers what it was asked, or raises `refusal`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.asked: list[tuple[bytes, StylizeOptions]] = []
        self.clients: list[str] = []
        self.refusal: Exception | None = None
        self.ready = True
        self.jobs: dict[str, list[JobView]] = {}  # each job's states, in the order they come
        self.submitted = 0
        self.idempotent: dict[str, str] = {}  # Idempotency-Key -> job
        self.callbacks: list[str | None] = []  # each submission's callback_url
        self.observed: list[tuple[str, str, int]] = []  # what the metrics were told

    async def process(
        self, image: Upload, options: StylizeOptions, client: str, kind: Kind = "image"
    ) -> Stylized:
        assert isinstance(image, bytes)
        self.asked.append((image, options))
        self.clients.append(client)
        if self.refusal is not None:
            raise self.refusal
        return Stylized(Picture(b"picture of " + image, CUT), KEY, "miss", options)

    async def submit_job(
        self,
        image: Upload,
        options: StylizeOptions,
        client: str,
        idempotency_key: str | None = None,
        *,
        callback_url: str | None = None,
        root: str = "",
        kind: Kind = "image",
    ) -> Admitted:
        self.callbacks.append(callback_url)
        if idempotency_key in self.idempotent:
            return Admitted(self.jobs[self.idempotent[idempotency_key]][0], replayed=True)
        await self.process(image, options, client)
        job = f"job{self.submitted}"
        if idempotency_key is not None:
            self.idempotent[idempotency_key] = job
        self.submitted += 1
        self.jobs[job] = [
            JobView(job, "queued", 2, 3.04, None, None),
            JobView(job, "queued", 1, 2.0, None, None),
            JobView(job, "running", None, 0.5, None, None),
            JobView(job, "done", None, None, KEY, None),
        ]
        return Admitted(self.jobs[job][0])

    async def job_view(self, job_id: str) -> JobView:
        if job_id not in self.jobs:
            raise errors.UnknownJob(f"no job {job_id!r}")
        return self.jobs[job_id][0]

    async def follow_job(self, first: JobView) -> AsyncIterator[JobView | None]:
        for view in self.jobs[first.id]:
            yield view
            if view.position == 1:
                yield None  # a keep-alive

    async def cancel_job(self, job_id: str) -> None:
        if job_id not in self.jobs:
            raise errors.UnknownJob(f"no job {job_id!r}")
        if self.jobs[job_id][0].status != "queued":
            raise errors.JobNotQueued("only a queued job can be cancelled")
        del self.jobs[job_id]

    async def result(self, key: str) -> Picture:
        if key != KEY:
            raise errors.UnknownResult(f"no result {key!r}")
        return Picture(b"\x89PNG\r\n\x1a\n picture", CUT)

    def gallery(self) -> list[tuple[Example, dict[str, str]]]:
        return [(Example("cat.jpg", b"\xff\xd8\xff cat", "image/jpeg"), {"paprika": KEY})]

    def example(self, name: str) -> Example:
        if name != "cat.jpg":
            raise errors.UnknownExample(f"no example {name!r}")
        return Example("cat.jpg", b"\xff\xd8\xff cat", "image/jpeg")

    async def styles(self, *, wait_s: float = 5.0) -> list[StyleStatus]:
        return [
            StyleStatus("paprika", "scenes", ready=self.ready, verified=True, sha1="ab" * 20),
            StyleStatus("celeba_distill", "faces", ready=False, error="the file is cut short"),
        ]

    async def stats(self) -> dict[str, object]:
        return {"cache": None, "ingress": {}, "model": {"replicas": 0}}

    def observe(self, route: str, outcome: str, status: int, seconds: float) -> None:
        self.observed.append((route, outcome, status))


def client_for(**settings: object) -> tuple[TestClient, StandIn]:
    service = StandIn(Settings(max_upload_bytes=LIMIT, **settings))  # type: ignore[arg-type]
    return TestClient(build_http_app(service), raise_server_exceptions=False), service


@pytest.fixture
def http() -> Iterator[tuple[TestClient, StandIn]]:
    client, service = client_for()
    with client:
        yield client, service


def test_a_raw_body_is_stylized_with_query_parameters(http: tuple[TestClient, StandIn]) -> None:
    client, service = http
    answer = client.post("/v1/stylize?style=paprika&size=64&format=jpeg", content=b"photo")
    assert answer.status_code == 200
    assert answer.content == b"picture of photo"
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["etag"] == f'"{KEY}"'
    assert answer.headers["x-cache"] == "miss" and answer.headers["x-style"] == "paprika"
    assert answer.headers["x-crop"] == "face 10,20,300,300"
    ((image, options),) = service.asked
    assert image == b"photo"
    assert (options.style, options.size, options.format, options.quality) == (
        "paprika",
        64,
        "jpeg",
        90,
    )


def test_a_multipart_upload_takes_its_parameters_from_form_fields(
    http: tuple[TestClient, StandIn],
) -> None:
    client, service = http
    answer = client.post(
        "/v1/stylize",
        files={"image": ("a.jpg", b"photo", "image/jpeg")},
        data={"size": "32", "crop": "square"},
    )
    assert answer.status_code == 200, answer.text
    ((image, options),) = service.asked
    assert image == b"photo" and (options.size, options.crop) == (32, "square")


@pytest.mark.parametrize(
    ("files", "data", "message"),
    [
        ({"image": ("a.jpg", b"1"), "other": ("b.jpg", b"2")}, {}, "refused"),
        ({"photo": ("a.jpg", b"1")}, {}, "no file field 'image'"),
        ({"image": ("a.jpg", b"1")}, {"colour": "red"}, "unknown parameter 'colour'"),
    ],
)
def test_malformed_forms_are_bad_parameters(
    http: tuple[TestClient, StandIn], files: dict, data: dict, message: str
) -> None:
    client, service = http
    answer = client.post("/v1/stylize", files=files, data=data)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_parameter"
    assert message in answer.json()["error"]["message"]
    assert service.asked == []


def test_a_declared_length_over_the_limit_is_refused_unread(
    http: tuple[TestClient, StandIn],
) -> None:
    client, service = http
    answer = client.post("/v1/stylize", content=b"x" * (LIMIT + 1))
    assert answer.status_code == 413
    assert answer.json()["error"] == {
        "code": "too_large",
        "message": f"the upload is {LIMIT + 1:,} bytes; the limit is {LIMIT:,} bytes",
    }
    assert service.asked == []


def test_a_chunked_body_is_cut_off_at_the_limit(http: tuple[TestClient, StandIn]) -> None:
    client, service = http

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 300

    answer = client.post("/v1/stylize", content=chunks())
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"
    assert service.asked == []


def test_a_multipart_image_over_the_limit_is_refused(http: tuple[TestClient, StandIn]) -> None:
    client, service = http
    answer = client.post("/v1/stylize", files={"image": ("a.jpg", b"x" * (LIMIT + 1))})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"
    assert service.asked == []


@pytest.mark.parametrize(
    "kind",
    [k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, AnimeGANError)],
)
def test_every_refusal_is_json_with_its_status_and_headers(
    http: tuple[TestClient, StandIn], kind: type[AnimeGANError]
) -> None:
    client, service = http
    service.refusal = kind("because")
    answer = client.post("/v1/stylize", content=b"photo")
    assert answer.status_code == kind.http_status
    assert answer.json() == {"error": {"code": kind.code, "message": "because"}}
    assert ("retry-after" in answer.headers) == (kind.http_status in (429, 503))
    assert ("www-authenticate" in answer.headers) == (kind.http_status == 401)


def test_a_fault_of_ours_is_a_json_500_without_details(http: tuple[TestClient, StandIn]) -> None:
    client, service = http
    service.refusal = RuntimeError("secret internals")
    answer = client.post("/v1/stylize", content=b"photo")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal"
    assert "secret" not in answer.text


def test_unknown_routes_and_methods_answer_json(http: tuple[TestClient, StandIn]) -> None:
    client, _ = http
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/stylize")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_transform_answers_hex_png_at_256_px_to_multipart_only(
    http: tuple[TestClient, StandIn],
) -> None:
    client, service = http
    answer = client.post("/transform", files={"image": ("a.jpg", b"photo")})
    assert answer.json() == {"image_base64": b"picture of photo".hex()}
    ((_, options),) = service.asked
    assert (options.size, options.format) == (256, "png")
    raw = client.post("/transform", content=b"photo")
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "bad_parameter"
    # The content type is checked before the body is read: a large raw body is not read.
    large = client.post("/transform", content=b"x" * (LIMIT * 5))
    assert large.status_code == 400 and large.json()["error"]["code"] == "bad_parameter"


def test_styles_list_each_style_without_its_hash(http: tuple[TestClient, StandIn]) -> None:
    client, _ = http
    assert client.get("/v1/styles").json() == [
        {
            "name": "paprika",
            "description": "scenes",
            "ready": True,
            "verified": True,
            "error": None,
        },
        {
            "name": "celeba_distill",
            "description": "faces",
            "ready": False,
            "verified": False,
            "error": "the file is cut short",
        },
    ]


def test_health_is_ok_only_with_a_ready_style(http: tuple[TestClient, StandIn]) -> None:
    client, service = http
    assert client.get("/healthz").json() == {"status": "ok", "ready_styles": ["paprika"]}
    service.ready = False
    starting = client.get("/healthz")
    assert starting.status_code == 503 and starting.json()["status"] == "starting"


def test_the_page_is_served_with_a_strict_content_security_policy(
    http: tuple[TestClient, StandIn],
) -> None:
    client, _ = http
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "default-src 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/stylize"), ("GET", "/v1/styles"), ("GET", "/v1/stats"), ("POST", "/transform")],
)
@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-key-0123456789", f"bearer {API_KEY}", API_KEY, f"Bearer {API_KEY} "],
)
def test_with_an_api_key_the_api_refuses_anyone_without_it(
    method: str, path: str, header: str | None
) -> None:
    client, service = client_for(api_key=API_KEY)
    headers = {} if header is None else {"Authorization": header}
    answer = client.request(method, path, content=b"photo", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert service.asked == []


def test_with_an_api_key_the_right_key_opens_the_api_and_health_and_page_stay_open() -> None:
    client, _ = client_for(api_key=API_KEY)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert client.post("/v1/stylize", content=b"photo", headers=auth).status_code == 200
    assert client.get("/v1/stats", headers=auth).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 200


def test_a_refusal_s_own_retry_after_is_sent_rounded_up(http: tuple[TestClient, StandIn]) -> None:
    client, service = http
    service.refusal = errors.TooManyJobs("wait", retry_after_s=12.2)
    assert client.post("/v1/stylize", content=b"photo").headers["retry-after"] == "13"


def test_a_job_is_accepted_with_its_location(http: tuple[TestClient, StandIn]) -> None:
    client, service = http
    answer = client.post("/v1/jobs", content=b"photo", params={"size": "64"})
    assert answer.status_code == 202
    assert answer.headers["location"] == "/v1/jobs/job0"
    assert answer.json() == {
        "id": "job0",
        "kind": "image",
        "status": "queued",
        "position": 2,
        "eta_s": 3.0,
        "progress": None,
        "crop": None,
        "faces": None,
        "result": None,
        "error": None,
    }
    assert service.asked[0][1].size == 64
    assert client.get("/v1/jobs/job0").json()["position"] == 2
    assert service.callbacks == [None]


def test_a_job_s_callback_url_is_no_stylize_option(http: tuple[TestClient, StandIn]) -> None:
    client, service = http
    hook = "http://127.0.0.1:9/hook"
    answer = client.post("/v1/jobs", content=b"photo", params={"callback_url": hook})
    assert answer.status_code == 202 and service.callbacks == [hook]


def test_a_job_s_input_is_validated_as_a_stylize_request_is(
    http: tuple[TestClient, StandIn],
) -> None:
    client, service = http
    assert client.post("/v1/jobs", content=b"x", params={"size": "abc"}).status_code == 400
    assert client.post("/v1/jobs", content=b"x" * (LIMIT + 1)).status_code == 413
    assert service.jobs == {}


def test_an_unknown_job_is_404_everywhere(http: tuple[TestClient, StandIn]) -> None:
    client, _ = http
    for answer in (
        client.get("/v1/jobs/nope"),
        client.get("/v1/jobs/nope/events"),
        client.delete("/v1/jobs/nope"),
    ):
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "unknown_job"


def test_a_queued_job_is_cancelled_with_204(http: tuple[TestClient, StandIn]) -> None:
    client, service = http
    client.post("/v1/jobs", content=b"photo")
    assert client.delete("/v1/jobs/job0").status_code == 204
    assert client.get("/v1/jobs/job0").status_code == 404
    client.post("/v1/jobs", content=b"photo")
    service.jobs["job1"].pop(0)
    service.jobs["job1"].pop(0)  # now running
    answer = client.delete("/v1/jobs/job1")
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "job_not_queued")


def test_job_events_are_server_sent_events_ending_with_the_result(
    http: tuple[TestClient, StandIn],
) -> None:
    client, _ = http
    client.post("/v1/jobs", content=b"photo")
    with client.stream("GET", "/v1/jobs/job0/events") as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["cache-control"] == "no-cache"
        text = "".join(answer.iter_text())
    blocks = [b for b in text.split("\n\n") if b]
    assert blocks[2] == ": keep-alive"
    events = [b.split("\n") for b in blocks if not b.startswith(":")]
    assert [e[0] for e in events] == [
        "event: queued",
        "event: queued",
        "event: running",
        "event: done",
    ]
    data = [json.loads(e[1].removeprefix("data: ")) for e in events]
    assert data == [
        {"position": 2, "eta_s": 3.0},
        {"position": 1, "eta_s": 2.0},
        {"eta_s": 0.5},
        {"result": f"/v1/results/{KEY}"},
    ]


def test_a_result_is_immutable_and_typed_by_its_bytes(http: tuple[TestClient, StandIn]) -> None:
    client, _ = http
    answer = client.get(f"/v1/results/{KEY}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["etag"] == f'"{KEY}"'
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert answer.headers["x-crop"] == "face 10,20,300,300"
    missing = client.get(f"/v1/results/{'0' * 64}")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_result")


def test_examples_are_listed_and_served(http: tuple[TestClient, StandIn]) -> None:
    client, _ = http
    listed = client.get("/v1/examples").json()
    assert listed == [
        {
            "name": "cat.jpg",
            "original": "/v1/examples/cat.jpg",
            "results": {"paprika": f"/v1/results/{KEY}"},
        }
    ]
    picture = client.get("/v1/examples/cat.jpg")
    assert picture.headers["content-type"] == "image/jpeg" and picture.content.endswith(b"cat")
    missing = client.get("/v1/examples/dog.jpg")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_example")


def test_job_routes_need_the_api_key_when_one_is_set() -> None:
    client, _ = client_for(api_key=API_KEY)
    with client:
        for method, path in [
            ("POST", "/v1/jobs"),
            ("GET", "/v1/jobs/job0"),
            ("DELETE", "/v1/jobs/job0"),
            ("GET", "/v1/jobs/job0/events"),
            ("GET", f"/v1/results/{KEY}"),
        ]:
            assert client.request(method, path).status_code == 401


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        ("203.0.113.9", None, [], "203.0.113.9"),
        ("203.0.113.9", "1.2.3.4", [], "203.0.113.9"),  # an untrusted peer cannot name another
        ("10.0.0.5", "1.2.3.4", ["10.0.0.0/8"], "1.2.3.4"),
        (
            "10.0.0.5",
            "6.6.6.6, 1.2.3.4, 10.0.0.7",
            ["10.0.0.0/8"],
            "1.2.3.4",
        ),  # rightmost untrusted
        ("10.0.0.5", "10.0.0.6, 10.0.0.7", ["10.0.0.0/8"], "10.0.0.6"),  # all trusted: leftmost
        # The Serve proxy already replaced its 127.0.0.1 peer with the last entry, 10.0.0.7:
        ("10.0.0.7", "1.2.3.4, 10.0.0.7", ["10.0.0.0/8"], "1.2.3.4"),
        ("10.0.0.7", "1.2.3.4, 10.0.0.7", [], "10.0.0.7"),
        ("testclient", "1.2.3.4", ["10.0.0.0/8"], "testclient"),  # not an address: not trusted
        ("2001:db8::1", "1.2.3.4", ["2001:db8::/32"], "1.2.3.4"),
    ],
)
def test_the_client_address_follows_only_trusted_proxies(
    peer: str, forwarded: str | None, trusted: list[str], client: str
) -> None:
    assert client_address(peer, forwarded, [ip_network(t) for t in trusted]) == client


@pytest.mark.parametrize(
    "address, prefix, client",
    [
        ("203.0.113.9", 64, "203.0.113.9"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2ff::1", 56, "2001:db8:1:200::/56"),
        ("2001:db8::1", 128, "2001:db8::1/128"),
        ("::ffff:198.51.100.7", 64, "198.51.100.7"),
        ("unknown", 64, "unknown"),
    ],
)
def test_an_ipv6_client_is_its_network_of_the_prefix(
    address: str, prefix: int, client: str
) -> None:
    assert client_name(address, ipv6_prefix=prefix) == client


def test_many_addresses_of_one_ipv6_64_are_one_client_in_line() -> None:
    service = StandIn(Settings())
    app = build_http_app(service)
    for host in range(1, 6):
        with TestClient(app, client=(f"2001:db8:5:6::{host:x}", 4000)) as client:
            client.post("/v1/jobs", content=b"photo")
    with TestClient(app, client=("2001:db8:5:7::1", 4000)) as neighbour:
        neighbour.post("/v1/jobs", content=b"photo")
    assert service.clients == ["2001:db8:5:6::/64"] * 5 + ["2001:db8:5:7::/64"]


def test_requests_are_queued_under_the_resolved_client_address() -> None:
    service = StandIn(Settings(trusted_proxies=["10.0.0.0/8"]))  # type: ignore[list-item]
    app = build_http_app(service)
    forwarded = {"X-Forwarded-For": "1.2.3.4"}
    with TestClient(app, client=("10.0.0.5", 4000)) as proxied:
        proxied.post("/v1/stylize", content=b"photo", headers=forwarded)
        proxied.post("/v1/jobs", content=b"photo")
    with TestClient(app, client=("203.0.113.9", 4000)) as direct:
        direct.post("/v1/stylize", content=b"photo", headers=forwarded)
    assert service.clients == ["1.2.3.4", "10.0.0.5", "203.0.113.9"]


def test_job_urls_carry_the_app_s_route_prefix() -> None:
    service = StandIn(Settings())
    with TestClient(build_http_app(service), root_path="/crowd") as client:
        answer = client.post("/v1/jobs", content=b"photo")
        assert answer.headers["location"] == "/crowd/v1/jobs/job0"
        service.jobs["job0"] = service.jobs["job0"][-1:]  # done
        assert client.get("/v1/jobs/job0").json()["result"] == f"/crowd/v1/results/{KEY}"


def test_each_answer_is_observed_with_its_route_outcome_and_status(
    http: tuple[TestClient, StandIn],
) -> None:
    client, service = http
    client.post("/v1/stylize", content=b"photo")
    client.post("/v1/stylize?size=abc", content=b"photo")
    client.post("/v1/jobs", content=b"photo")
    client.get(f"/v1/results/{'0' * 64}")
    client.get("/v1/styles")  # not a request for a picture: not counted
    assert service.observed == [
        ("stylize", "miss", 200),
        ("stylize", "bad_parameter", 400),
        ("jobs", "queued", 202),
        ("results", "unknown_result", 404),
    ]


def test_a_submission_retried_with_its_idempotency_key_gets_the_same_job(
    http: tuple[TestClient, StandIn],
) -> None:
    client, service = http
    headers = {"Idempotency-Key": "order-1234"}
    first = client.post("/v1/jobs", content=b"photo", headers=headers)
    again = client.post("/v1/jobs", content=b"photo", headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert service.submitted == 1
    assert [o for o in service.observed if o[0] == "jobs"] == [
        ("jobs", "queued", 202),
        ("jobs", "replayed", 200),
    ]


@pytest.mark.parametrize("key", ["", "x" * 256, "two words", "tab\tkey"])
def test_an_idempotency_key_out_of_shape_is_refused_before_the_upload_is_read(
    http: tuple[TestClient, StandIn], key: str
) -> None:
    client, service = http
    answer = client.post("/v1/jobs", content=b"photo", headers={"Idempotency-Key": key})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_parameter"
    assert service.submitted == 0
