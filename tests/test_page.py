"""The web page at `/`, driven in a real headless Chromium (Debian's) by Playwright."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests import clips as made
from tests.conftest import SHARED_PHOTOS, Service, jpeg_bytes, smooth_picture
from tests.portraits import PHOTO, faceless, group, pair
from tests.test_serve_examples import warmed
from tests.test_serve_jobs import idle

pytestmark = pytest.mark.timeout(600)

CHROMIUM = "/usr/bin/chromium"
# Root needs --no-sandbox; the rest keep Chromium from dialling out of this closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(service.url + "/")
    expect(page.locator("#style option[value=paprika]")).to_be_enabled()
    yield page
    context.close()


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photograph (a copy, so its bytes are unique to this module's cache keys)."""
    source = SHARED_PHOTOS / "kimono-street.jpg"
    data = source.read_bytes() if source.is_file() else jpeg_bytes(smooth_picture(640, 427))
    path = tmp_path_factory.mktemp("page") / "street.jpg"
    path.write_bytes(data + b"page-test")  # trailing bytes after EOI: same picture, new key
    return path


def stylize(page: Page) -> None:
    page.get_by_role("button", name="Stylize").click()


def test_the_page_is_served_with_a_strict_content_policy(service: Service) -> None:
    answer = httpx.get(service.url + "/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in answer.headers["content-security-policy"]
    assert "http://" not in answer.text and "https://" not in answer.text  # no CDN


def test_a_photo_comes_back_stylized_then_from_the_cache(page: Page, photo_file: Path) -> None:
    page.set_input_files("#file", photo_file)
    page.select_option("#style", "paprika")
    expect(page.locator("#style-about")).to_contain_text("scenes")
    page.select_option("#size", "256")
    stylize(page)
    expect(page.locator("#cache")).to_have_text("miss", timeout=60_000)
    width = page.eval_on_selector("#after", "img => img.complete && img.naturalWidth")
    assert width == 256
    # A miss soon after the cluster starts can take over a second here: either unit is shown.
    expect(page.locator("#took")).to_have_text(re.compile(r"^(\d+ ms|\d+\.\d s)$"))
    expect(page.locator("#download")).to_have_attribute("download", "street-paprika.png")

    stylize(page)
    expect(page.locator("#status")).to_have_text("Done.", timeout=60_000)
    expect(page.locator("#cache")).to_have_text("hit")


def test_the_slider_reveals_the_original_under_the_result(page: Page, photo_file: Path) -> None:
    page.set_input_files("#file", photo_file)
    page.select_option("#crop", "square")
    stylize(page)
    expect(page.locator("#cache")).not_to_be_empty(timeout=60_000)
    page.locator("#slider").fill("80")
    assert page.eval_on_selector("#before", "img => img.style.clipPath") == "inset(0px 20% 0px 0px)"


def test_an_invalid_file_shows_the_error_message_not_json(page: Page, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("these are not the pixels you are looking for")
    page.set_input_files("#file", notes)
    stylize(page)
    status = page.locator("#status")
    expect(status).to_have_class("error", timeout=60_000)
    expect(status).to_contain_text("Not an image format we read")
    assert "{" not in status.inner_text()


def test_the_form_works_from_the_keyboard(page: Page, photo_file: Path) -> None:
    page.set_input_files("#file", photo_file)
    page.focus("#size")
    page.keyboard.press("Tab")  # to the crop menu
    page.keyboard.press("ArrowDown")
    assert page.input_value("#crop") == "square"
    page.keyboard.press("Tab")  # to the face style's menu
    page.keyboard.press("Tab")  # to the button (the key field is hidden)
    page.keyboard.press("Enter")
    expect(page.locator("#cache")).not_to_be_empty(timeout=60_000)


def test_it_fits_a_phone_screen(browser: Browser, service: Service) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(service.url + "/")
    expect(page.locator("#style option[value=paprika]")).to_be_enabled()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    context.close()


def test_a_style_that_is_not_ready_is_disabled_and_says_why(
    browser: Browser, damaged_service: str
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(damaged_service + "/")
    paprika = page.locator("#style option[value=paprika]")
    expect(paprika).to_be_disabled()
    expect(paprika).to_have_text("paprika (not ready)")
    assert "Not ready:" in (paprika.get_attribute("data-about") or "")
    expect(page.locator("#style")).to_have_value("celeba_distill")  # the first ready style
    context.close()


# -- the line: the crowd app's one slot, held by a big job, so the page's job has to queue --


def hold_the_model(url: str, seed: int) -> str:
    """A 768 px job that keeps the one slot for seconds (once the line is empty); its id."""
    idle(url)
    image = jpeg_bytes(smooth_picture(768, 768, seed=seed))
    answer = httpx.post(
        f"{url}/v1/jobs", content=image, params={"style": "paprika", "size": 768}, timeout=60
    )
    assert answer.json()["status"] == "running"
    return str(answer.json()["id"])


def queued_page(browser: Browser, crowd: str, tmp_path: Path, seed: int) -> Page:
    """A page whose photo (new: `seed`) waits in line behind a big job."""
    photo = tmp_path / f"photo{seed}.jpg"
    photo.write_bytes(jpeg_bytes(smooth_picture(300, 200, seed=seed)))
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    page.goto(crowd + "/")  # first: a style list asked of a busy model waits for its slot
    expect(page.locator("#style option[value=paprika]")).to_be_enabled(timeout=30_000)
    hold_the_model(crowd, seed + 1)
    page.set_input_files("#file", photo)
    page.select_option("#size", "256")
    stylize(page)
    return page


def test_a_queued_photo_shows_its_place_in_line_then_the_result(
    browser: Browser, crowd: str, tmp_path: Path
) -> None:
    page = queued_page(browser, crowd, tmp_path, seed=8100)
    expect(page.locator("#status")).to_contain_text("You are number 1 in line", timeout=30_000)
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_visible()
    expect(page.locator("#cache")).to_have_text("miss", timeout=120_000)
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_hidden()
    assert "job=" in page.url
    page.context.close()


def test_a_reload_keeps_following_the_same_job(
    browser: Browser, crowd: str, tmp_path: Path
) -> None:
    page = queued_page(browser, crowd, tmp_path, seed=8102)
    expect(page.locator("#status")).to_contain_text("in line", timeout=30_000)
    job_url = page.url
    page.reload()
    assert page.url == job_url
    expect(page.locator("#cache")).to_have_text("miss", timeout=120_000)
    expect(page.locator("#after")).to_be_visible()
    expect(page.locator("#compare")).to_have_class("alone shown")  # no original after a reload
    page.context.close()


def test_cancel_takes_a_queued_job_out_of_line(
    browser: Browser, crowd: str, tmp_path: Path
) -> None:
    page = queued_page(browser, crowd, tmp_path, seed=8104)
    expect(page.locator("#status")).to_contain_text("in line", timeout=30_000)
    job = page.url.split("job=")[1]
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.locator("#status")).to_have_text("Cancelled.")
    view = httpx.get(f"{crowd}/v1/jobs/{job}", timeout=10).json()
    assert (view["status"], view["error"]["code"]) == ("failed", "cancelled")
    expect(page.get_by_role("button", name="Stylize")).to_be_enabled()
    page.context.close()


def test_the_divider_follows_the_pointer_on_the_picture(page: Page, photo_file: Path) -> None:
    page.set_input_files("#file", photo_file)
    page.select_option("#size", "256")
    stylize(page)
    expect(page.locator("#cache")).not_to_be_empty(timeout=60_000)
    picture = page.locator("#after").bounding_box()
    assert picture is not None
    for share in (0.25, 0.5, 0.9):
        page.mouse.move(picture["x"] + share * picture["width"], picture["y"] + 10)
        divider = page.locator("#divider").bounding_box()
        assert divider is not None
        middle = divider["x"] + divider["width"] / 2
        assert abs(middle - (picture["x"] + share * picture["width"])) <= 2
    page.keyboard.press("Tab")  # the keyboard still moves it, through the range input
    page.locator("#slider").focus()
    page.keyboard.press("Home")
    assert (
        page.eval_on_selector("#before", "img => img.style.clipPath") == "inset(0px 100% 0px 0px)"
    )


@pytest.mark.skipif(not PHOTO.exists(), reason=f"needs {PHOTO} (../shared)")
def test_a_face_crop_says_whether_it_found_the_face(page: Page, tmp_path: Path) -> None:
    portrait, street = pair(), faceless()[0]
    for picture, note in [(portrait, "Face found"), (street, "No face found: centre crop")]:
        path = tmp_path / f"{picture.name}.jpg"
        path.write_bytes(picture.data + b"page-face")  # a key of this test's own
        page.set_input_files("#file", path)
        page.select_option("#crop", "face")
        page.select_option("#size", "256")
        stylize(page)
        expect(page.locator("#cut")).to_have_text(note, timeout=60_000)
        # The original under the result is cut to the same square.
        page.wait_for_function(
            "() => [...document.querySelectorAll('#compare img')]"
            ".every(i => i.complete && i.naturalWidth > 0 && i.naturalWidth === i.naturalHeight)"
        )
        sizes = page.eval_on_selector(
            "#compare",
            "c => [...c.querySelectorAll('img')].map(i => [i.naturalWidth, i.naturalHeight])",
        )
        (after_w, after_h), (before_w, before_h) = sizes
        assert after_w == after_h and before_w == before_h
        assert before_w >= after_w  # the original's box, before the shrink to 256


def test_an_example_shows_its_result_at_once_from_the_cache(
    browser: Browser, examples_app: str
) -> None:
    warmed(examples_app)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(examples_app + "/")
    expect(page.get_by_role("heading", name="Try an example")).to_be_visible()
    examples = page.locator("#gallery button")
    expect(examples).to_have_count(2)
    expect(page.locator("#style option[value=paprika]")).to_be_enabled()
    examples.first.click()
    expect(page.locator("#cache")).to_have_text("hit", timeout=30_000)
    assert page.eval_on_selector("#after", "img => img.complete && img.naturalWidth") == 80
    expect(page.locator("#drop-text")).to_contain_text("example0.jpg")
    context.close()


def test_a_video_plays_beside_the_original_with_its_duration(page: Page, tmp_path: Path) -> None:
    clip = tmp_path / "pan.webm"  # VP9 and Opus: what every Chromium build plays
    clip.write_bytes(made.pan(36, format="webm", codec="libvpx-vp9", sound_codec="libopus"))
    page.set_input_files("#file", clip)
    page.select_option("#style", "paprika")
    page.select_option("#size", "256")
    page.evaluate(  # every line the status shows, to find the frames counted among them
        """() => { window.said = [];
        new MutationObserver(() => window.said.push(document.getElementById('status').textContent))
          .observe(document.getElementById('status'), { childList: true, subtree: true }); }"""
    )
    stylize(page)
    expect(page.locator("#status")).to_have_text("Done.", timeout=120_000)
    playable = "v => v.readyState >= 2"
    page.wait_for_function(f"() => ({playable})(document.getElementById('clip-after'))")
    page.wait_for_function(f"() => ({playable})(document.getElementById('clip-before'))")
    after = page.eval_on_selector("#clip-after", "v => v.duration")
    before = page.eval_on_selector("#clip-before", "v => v.duration")
    assert abs(after - before) < 0.1, (after, before)
    assert page.eval_on_selector("#clip-after", "v => v.videoWidth") == 96  # never enlarged
    said = page.evaluate("window.said")
    assert any(line.startswith("Stylizing: frame") and "of 36" in line for line in said), said
    name = page.get_attribute("#download", "download")
    assert name is not None and name.startswith("pan-paprika.")


def test_a_group_photo_s_faces_are_drawn_in_the_face_style_and_outlined(
    page: Page, tmp_path: Path
) -> None:
    path = tmp_path / "group.jpg"
    path.write_bytes(group().data + b"page-faces")  # a key of this test's own
    page.set_viewport_size({"width": 900, "height": 900})  # narrower than the result
    page.set_input_files("#file", path)
    page.select_option("#style", "paprika")
    page.select_option("#face-style", "celeba_distill")
    page.select_option("#size", "768")
    stylize(page)
    expect(page.locator("#cut")).to_have_text("4 faces drawn in celeba_distill", timeout=120_000)
    expect(page.locator("#dims")).to_have_text("768 \u00d7 432 px")
    boxes = page.locator("#compare .face-box")
    expect(boxes).to_have_count(4)
    expect(boxes.first).to_have_css("opacity", "0")
    page.hover("#compare")
    expect(boxes.first).to_have_css("opacity", "1")  # outlined while the pointer is on it
    expect(page.locator("#full")).to_be_visible()  # wider than the page shows it
