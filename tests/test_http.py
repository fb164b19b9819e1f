"""The HTTP layer in-process: Starlette's TestClient before a plain stand-in service, no Ray."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from deployments.core import errors
from deployments.core.errors import AnimeGANError
from deployments.core.options import StylizeOptions
from deployments.core.results import StyleStatus, Stylized
from deployments.core.settings import Settings
from deployments.http import build_http_app

KEY = "k" * 64
API_KEY = "http-test-key-0123456789"
LIMIT = 1000  # the stand-in's upload limit, in bytes


class StandIn:
    """Answers like the ingress would, remembers what it was asked, or raises `refusal`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.asked: list[tuple[bytes, StylizeOptions]] = []
        self.refusal: Exception | None = None
        self.ready = True

    async def process(self, image: bytes, options: StylizeOptions) -> Stylized:
        self.asked.append((image, options))
        if self.refusal is not None:
            raise self.refusal
        return Stylized(b"picture of " + image, KEY, "miss", options)

    async def styles(self, *, wait_s: float = 5.0) -> list[StyleStatus]:
        return [
            StyleStatus("paprika", "scenes", ready=self.ready, verified=True, sha1="ab" * 20),
            StyleStatus("celeba_distill", "faces", ready=False, error="the file is cut short"),
        ]

    async def stats(self) -> dict[str, object]:
        return {"cache": None, "ingress": {}, "model": {"replicas": 0}}


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
    assert ("retry-after" in answer.headers) == (kind.http_status == 503)
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
