"""The chat page, used as a person uses it: headless Chromium, real clicks and keys."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.api.conftest import FakeApi
from tests.browser.conftest import off_loop
from tests.browser.helpers import composer, log_in, messages, new_email, register
from tests.fakes import FakeBackend
from tests.support import PASSWORD, FileServer, wait_for

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "chat-page.png"


def test_register_send_and_watch_the_answer_stream_in(page: Page, backend: FakeBackend) -> None:
    backend.script = [f"word{i}" for i in range(30)]
    backend.answer_tokens, backend.token_delay = 30, 0.05
    register(page)
    prompt = composer(page)
    prompt.fill("Tell me about the sea")
    prompt.press("Shift+Enter")  # a new line, not a send
    prompt.press_sequentially("in two lines")
    expect(prompt).to_have_value("Tell me about the sea\nin two lines")
    prompt.press("Enter")
    log = page.get_by_role("log")
    expect(log.get_by_role("listitem").first).to_contain_text("in two lines")
    answer = log.get_by_role("listitem").nth(1)
    # Streamed: the first words show while the Stop button is still up, the rest after.
    expect(answer).to_contain_text("word0")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(answer).not_to_contain_text("word29")
    expect(answer).to_contain_text("word29")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(prompt).to_have_value("")
    # The session cookie is not readable by scripts.
    assert page.evaluate("document.cookie") == ""
    cookie = next(c for c in page.context.cookies() if c["name"] == "llm_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"


def test_reload_and_continue_a_conversation_from_the_list(page: Page, backend: FakeBackend) -> None:
    register(page)
    composer(page).fill("first question")
    page.get_by_role("button", name="Send").click()
    expect(messages(page)).to_have_count(2)
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    page.reload()
    sidebar = page.get_by_role("complementary", name="Conversations")
    conversation = sidebar.get_by_role("button", name="first question", exact=True)
    expect(conversation).to_be_visible()
    expect(messages(page)).to_have_count(0)  # a reload starts a new chat
    conversation.click()
    expect(messages(page)).to_have_count(2)
    expect(page.locator("#conversation-title")).to_have_text("first question")
    composer(page).fill("second question")
    composer(page).press("Enter")
    expect(messages(page)).to_have_count(4)
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    # Still one conversation: the turn continued it.
    expect(sidebar.get_by_role("listitem")).to_have_count(1)

    sidebar.get_by_role("button", name="Rename first question").click()
    title = sidebar.get_by_label("New title")
    title.fill("Sea notes")
    title.press("Enter")
    expect(sidebar.get_by_role("button", name="Sea notes", exact=True)).to_be_visible()
    expect(page.locator("#conversation-title")).to_have_text("Sea notes")
    page.reload()
    expect(sidebar.get_by_role("button", name="Sea notes", exact=True)).to_be_visible()

    sidebar.get_by_role("button", name="Delete Sea notes").click()
    sidebar.get_by_role("button", name="Delete Sea notes").click()  # "Confirm delete"
    expect(sidebar.get_by_role("listitem")).to_have_count(0)


def test_stop_cancels_a_long_generation(page: Page, site: FakeApi, backend: FakeBackend) -> None:
    backend.script = ["endless"]
    backend.answer_tokens, backend.token_delay = 10_000, 0.05
    register(page)
    cancelled_before = backend.stats.cancelled
    composer(page).fill("Write forever")
    composer(page).press("Enter")
    answer = messages(page).nth(1)
    expect(answer).to_contain_text("endless endless")
    page.get_by_role("button", name="Stop").click()
    expect(answer).to_contain_text("Stopped.")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    # The server saw the client go and cancelled the generation: no tokens keep coming.
    assert wait_for(lambda: backend.stats.cancelled > cancelled_before, timeout=10)
    assert backend.busy == 0


def test_a_first_answer_cut_by_a_reload_keeps_the_question(
    page: Page, backend: FakeBackend
) -> None:
    backend.script = ["endless"]
    backend.answer_tokens, backend.token_delay = 10_000, 0.05
    register(page)
    composer(page).fill("Keep this question")
    composer(page).press("Enter")
    expect(messages(page).nth(1)).to_contain_text("endless endless")
    sidebar = page.get_by_role("complementary", name="Conversations")
    kept = sidebar.get_by_role("button", name="Keep this question", exact=True)
    for _ in range(10):  # the server stores the turn once it has seen the page go
        page.reload()
        expect(messages(page)).to_have_count(0)
        if kept.is_visible():
            break
        page.wait_for_timeout(300)
    kept.click()
    expect(messages(page)).to_have_count(2)
    expect(messages(page).nth(0)).to_contain_text("Keep this question")
    expect(messages(page).nth(1)).to_contain_text("endless")
    expect(messages(page).nth(1)).to_contain_text("Stopped.")


def test_create_and_revoke_an_api_key(page: Page, site: FakeApi) -> None:
    register(page)
    page.get_by_role("button", name="API keys").click()
    page.get_by_label("Key name").fill("my script")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New API key")
    expect(secret).to_have_text(re.compile(r"^llms_"))
    key = secret.inner_text()
    row = page.get_by_role("row").filter(has_text="my script")
    expect(row).to_contain_text("active")
    with httpx.Client(base_url=site.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get("/v1/models").status_code == 200
        row.get_by_role("button", name="Revoke my script").click()
        expect(row).to_contain_text("revoked")
        expect(row.get_by_role("button")).to_have_count(0)
        assert client.get("/v1/models").status_code == 401


def test_admin_controls_only_for_admins(page: Page, site: FakeApi) -> None:
    email = register(page)
    expect(page.get_by_role("button", name="Admin")).to_be_hidden()
    expect(page.get_by_role("heading", name="Administration")).to_be_hidden()
    expect(page.get_by_role("table", name="Users")).to_be_hidden()
    # Even a hand-made request from the page is refused by the API.
    status = page.evaluate("fetch('/users').then(r => r.status)")
    assert status == 403
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()

    off_loop(site.make_admin, email)
    log_in(page, email)
    page.get_by_role("button", name="Admin").click()
    users = page.get_by_role("table", name="Users")
    expect(users).to_contain_text(email)
    other = site.register()
    page.get_by_role("button", name="Chat").click()
    page.get_by_role("button", name="Admin").click()
    active = users.get_by_label(f"{other['email']} is active")
    expect(active).to_be_checked()
    active.uncheck()
    expect(page.get_by_role("alert").filter(has_text="updated")).to_be_visible()
    with httpx.Client(base_url=site.base_url) as client:
        login = client.post("/auth/login", json={"email": other["email"], "password": PASSWORD})
    assert login.status_code == 403  # deactivated
    role = users.get_by_label(f"Role of {other['email']}")
    role.select_option("admin")
    expect(page.get_by_role("alert").filter(has_text=f"{other['email']} updated")).to_be_visible()
    expect(users.get_by_label(f"Role of {other['email']}")).to_have_value("admin")

    models = page.get_by_role("table", name="Models")
    alias = site.registry.default_alias
    row = models.get_by_role("row").filter(has_text=alias)
    row.get_by_role("button", name=f"Unload {alias}").click()
    expect(row).to_contain_text("unloaded")
    row.get_by_role("button", name=f"Load {alias}").click()
    expect(row.get_by_role("button", name=f"Unload {alias}")).to_be_visible()
    expect(row).not_to_contain_text("unloaded")
    # Loaded again: the model answers.
    page.get_by_role("button", name="Chat").click()
    composer(page).fill("still there?")
    composer(page).press("Enter")
    expect(messages(page)).to_have_count(2)
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.get_by_role("alert").filter(has_text=re.compile(r"\w"))).to_have_count(0)


def test_model_output_is_shown_as_text_never_as_html(page: Page, backend: FakeBackend) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    backend.script = hostile.split()
    backend.answer_tokens = len(backend.script)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    register(page)
    composer(page).fill("say something odd")
    composer(page).press("Enter")
    answer = messages(page).nth(1)
    expect(answer.locator(".content")).to_have_text(hostile)
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    assert page.get_by_role("log").locator("img").count() == 0
    # Reopened from history, it is still text.
    page.reload()
    page.get_by_role("complementary", name="Conversations").get_by_role(
        "button", name="say something odd", exact=True
    ).click()
    expect(messages(page).nth(1).locator(".content")).to_have_text(hostile)
    assert page.get_by_role("log").locator("img").count() == 0
    assert dialogs == []


def test_api_errors_show_as_readable_messages(page: Page) -> None:
    page.goto("/")
    page.get_by_label("Email", exact=True).fill(new_email())
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("alert").first).to_contain_text("password")
    page.get_by_label("Password", exact=True).fill("wrong-password-123")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert").first).to_contain_text("invalid email or password")


def test_fits_a_phone_and_works_from_the_keyboard(page: Page, backend: FakeBackend) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    email = new_email()
    page.goto("/")
    expect(page.get_by_label("Email", exact=True)).to_be_focused()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")  # Log in
    page.keyboard.press("Tab")  # Register
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(composer(page)).to_be_focused()
    page.keyboard.type("hello from a phone")
    page.keyboard.press("Enter")
    expect(messages(page)).to_have_count(2)
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    for name in ("Send", "Log out", "Conversations"):
        expect(page.get_by_role("button", name=name)).to_be_in_viewport()
    # The conversation list is a drawer on a phone.
    page.get_by_role("button", name="Conversations").click()
    expect(page.get_by_role("button", name="New chat")).to_be_in_viewport()
    page.get_by_role("button", name="New chat").click()
    expect(messages(page)).to_have_count(0)


def test_screenshot_for_the_readme(page: Page, site: FakeApi, backend: FakeBackend) -> None:
    backend.script = (
        "Tides come from the Moon's pull on the oceans: the side of the Earth facing it, "
        "and the side opposite, bulge outward, so most coasts see two high tides a day."
    ).split()
    backend.answer_tokens = len(backend.script)
    register(page, "ada@example.com")  # the same picture every run: nothing random on it
    composer(page).fill("Why does the sea have tides?")
    composer(page).press("Enter")
    expect(messages(page).nth(1)).to_contain_text("two high tides a day.")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


UNNAMED_CONTROLS = """() => [...document.querySelectorAll('button, input, select, textarea')]
    .filter((control) => control.getClientRects().length > 0)
    .filter((control) => !(control.getAttribute('aria-label') || '').trim()
        && ![...(control.labels || [])].some((label) => label.textContent.trim())
        && !(control.tagName === 'BUTTON' && control.textContent.trim()))
    .map((control) => control.outerHTML)"""


def test_every_visible_control_has_an_accessible_name(page: Page, site: FakeApi) -> None:
    email = register(page)
    composer(page).fill("a question")
    composer(page).press("Enter")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    off_loop(site.make_admin, email)
    page.reload()
    page.locator("summary", has_text="Settings").click()
    assert page.evaluate(UNNAMED_CONTROLS) == []
    for section in ("API keys", "Account", "Admin"):
        page.get_by_role("button", name=section, exact=True).click()
        expect(page.get_by_role("heading", level=2).first).to_be_visible()
        assert page.evaluate(UNNAMED_CONTROLS) == [], section


def test_search_finds_a_message_and_opens_its_conversation(
    page: Page, backend: FakeBackend
) -> None:
    register(page)
    for question in ("my cat is a fluffy little kitten", "the stock market fell today"):
        page.get_by_role("button", name="New chat").click()
        composer(page).fill(question)
        composer(page).press("Enter")
        expect(messages(page)).to_have_count(2)
        expect(page.get_by_role("button", name="Send")).to_be_visible()
    page.get_by_role("button", name="New chat").click()
    sidebar = page.get_by_role("complementary", name="Conversations")
    results = sidebar.get_by_role("list", name="Search results")
    box = sidebar.get_by_role("searchbox", name="Search your messages")
    # Messages are embedded after their turn, in the background: search until found.
    for _ in range(50):
        box.fill("kitten cat")
        box.press("Enter")
        if results.get_by_role("listitem").count():
            break
        page.wait_for_timeout(200)
    first = results.get_by_role("listitem").first
    expect(first).to_contain_text("my cat is a fluffy little kitten")
    first.get_by_role("button").click()
    expect(page.locator("#conversation-title")).to_have_text("my cat is a fluffy little kitten")
    expect(messages(page).first).to_have_text(re.compile("fluffy little kitten"))


def test_admin_adds_a_model_watches_its_download_and_deletes_it(
    page: Page, site: FakeApi, model_files: FileServer
) -> None:
    email = register(page)
    off_loop(site.make_admin, email)
    page.reload()
    page.get_by_role("button", name="Admin").click()
    form = page.get_by_role("form", name="Add a model")
    form.get_by_label("Alias").fill("pulled")
    form.get_by_label("Source").select_option("url")
    form.get_by_label("Location").fill(f"{model_files.base_url}/smol.gguf")
    form.get_by_role("button", name="Add model").click()
    models = page.get_by_role("table", name="Models")
    row = models.get_by_role("row").filter(has_text="pulled")
    expect(row.get_by_role("progressbar", name="pulled downloading")).to_be_visible()
    expect(row.get_by_role("button", name="Unload pulled")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("alert").filter(has_text="pulled is ready")).to_be_visible()
    # Unload and load again, as any model.
    row.get_by_role("button", name="Unload pulled").click()
    expect(row.get_by_role("button", name="Load pulled")).to_be_visible()
    row.get_by_role("button", name="Load pulled").click()
    expect(row.get_by_role("button", name="Unload pulled")).to_be_visible()
    # A settings model has no Delete; the catalog's has, behind a confirmation.
    default = models.get_by_role("row").filter(has_text=site.registry.default_alias)
    expect(default.get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete pulled").click()
    expect(page.get_by_role("alert").filter(has_text="pulled deleted")).to_be_visible()
    expect(models.get_by_role("row").filter(has_text="pulled")).to_have_count(0)
