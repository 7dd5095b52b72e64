"""The chat page for daily use (issue 26), in Chromium: answers rendered as Markdown (and
hostile Markdown kept inert), code copied to the clipboard, one's account (password, email,
log out everywhere, usage), profiles made by an admin and used in a chat, tool calls shown
as labelled blocks, by keyboard and at phone width; and the README's pictures."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Dialog, Locator, Page, Request, expect

from tests.api.conftest import FakeApi
from tests.browser.conftest import off_loop, open_page
from tests.browser.helpers import ask, composer, log_in, messages, register
from tests.fakes import FakeBackend
from tests.support import PASSWORD, WEATHER_TOOL, FileServer, fresh_minute

DOCS = Path(__file__).resolve().parents[2] / "docs"
CLIPBOARD = ["clipboard-read", "clipboard-write"]

EVERY_KIND = """# Tides

Tides are **mostly** the Moon's *doing*, with ~~no~~ some help from the Sun:
see [NOAA](https://oceanservice.noaa.gov/facts/tides.html)
or write to [the keeper](mailto:keeper@example.com).

## Steps

1. Find the `moon` in the sky
2. Count the hours
   - twice a day
   - about 12 h 25 min apart

| Body | Share |
|:-----|------:|
| Moon | 69% |
| Sun | 31% |

3. Wait for the third
4. And the fourth

> The sea is patient.

```python
def high_tides(days):
    return 2 * days  # <b>not bold</b>
```

---

That is all."""

HOSTILE = """[click me](javascript:alert(1)) and
[data](data:text/html,<script>alert(2)</script>) and [here](/auth/session)

<img src=x onerror=alert(3)>

<script>alert(4)</script>

```html
<script>alert(5)</script>
<img src=y onerror=alert(6)>
```

![tracker](http://127.0.0.1:9/pixel.png) and ![logo](https://example.com/logo.png "a logo")

[a fine link](https://example.com/page)"""

CODE = (
    'with open("notes.txt", encoding="utf-8") as file:\n'
    "    for line in file:\n"
    "        print(line.rstrip())"
)


def pieces_of(text: str) -> list[str]:
    """The text as a model streams it: words with the spaces and newlines around them."""
    return re.findall(r"\s*\S+|\s+$", text)


def say_exactly(backend: FakeBackend, text: str, delay: float = 0.005) -> None:
    backend.pieces = pieces_of(text)
    backend.answer_tokens, backend.token_delay = len(backend.pieces), delay
    assert "".join(backend.pieces) == text


def open_view(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("button", name=name).click()


def number_in(locator: Locator) -> int:
    match = re.search(r"\d+", locator.inner_text())
    assert match, locator.inner_text()
    return int(match[0])


def test_markdown_of_every_kind_renders(page: Page, backend: FakeBackend) -> None:
    say_exactly(backend, EVERY_KIND, delay=0.03)
    page.set_viewport_size({"width": 1100, "height": 600})  # the answer is taller than the log
    register(page)
    composer(page).fill("Tell me about tides")
    composer(page).press("Enter")
    answer = messages(page).nth(1)
    # Streaming: a finished block is built once and kept, while the last one grows.
    expect(answer.get_by_role("heading", name="Steps")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    title = answer.get_by_role("heading", name="Tides", level=3).element_handle()
    title.evaluate("node => { node.dataset.seen = 'streaming'; }")
    # A reader who scrolls up to read stays there while the answer grows.
    log = page.get_by_role("log")
    page.wait_for_function(
        "() => { const log = document.querySelector('[role=log]');"
        " return log.scrollHeight - log.clientHeight > 150; }"
    )
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    log.evaluate("node => { node.scrollTop = 0; }")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    assert title.evaluate("node => node.isConnected && node.dataset.seen") == "streaming"
    assert log.evaluate("node => node.scrollTop") == 0

    expect(answer.get_by_role("heading", name="Steps", level=4)).to_be_visible()
    expect(answer.locator("strong")).to_have_text("mostly")
    expect(answer.locator("em")).to_have_text("doing")
    expect(answer.locator("s")).to_have_text("no")
    noaa = answer.get_by_role("link", name="NOAA")
    expect(noaa).to_have_attribute("href", "https://oceanservice.noaa.gov/facts/tides.html")
    expect(noaa).to_have_attribute("rel", "noopener noreferrer")
    expect(noaa).to_have_attribute("target", "_blank")
    expect(answer.get_by_role("link", name="the keeper")).to_have_attribute(
        "href", "mailto:keeper@example.com"
    )
    steps = answer.locator("ol").first.locator("> li")
    expect(steps).to_have_count(2)
    expect(answer.locator("ol").first).to_have_js_property("start", 1)
    expect(answer.locator("ol").last).to_have_js_property("start", 3)
    expect(answer.locator("ol").last.locator("> li")).to_have_text(
        ["Wait for the third", "And the fourth"]
    )
    expect(steps.first.locator("code")).to_have_text("moon")
    expect(steps.nth(1).locator("ul > li")).to_have_text(["twice a day", "about 12 h 25 min apart"])
    table = answer.get_by_role("table")
    expect(table.get_by_role("columnheader")).to_have_text(["Body", "Share"])
    expect(table.get_by_role("cell", name="69%")).to_have_class("align-right")
    expect(answer.locator("blockquote")).to_have_text("The sea is patient.")
    expect(answer.locator(".code-language")).to_have_text("python")
    code = answer.locator("pre code")
    expect(code).to_have_text(
        "def high_tides(days):\n    return 2 * days  # <b>not bold</b>", use_inner_text=True
    )
    expect(code.locator("b")).to_have_count(0)
    expect(answer.get_by_role("button", name="Copy python code")).to_be_visible()
    expect(answer.get_by_role("separator")).to_have_count(1)
    expect(answer.locator("p").last).to_have_text("That is all.")
    for marker in ("**", "```", "| Body", "# Tides", "~~"):
        expect(answer).not_to_contain_text(marker)

    # A new question: the log, at the bottom again, follows its answer to the end.
    log.evaluate("node => { node.scrollTop = node.scrollHeight; }")
    ask(page, "Again, please")
    assert log.evaluate("node => node.scrollHeight - node.scrollTop - node.clientHeight < 48")

    # Opened again from the list, the stored answer renders the same way.
    page.reload()
    page.get_by_role("complementary", name="Conversations").get_by_role(
        "button", name="Tell me about tides", exact=True
    ).click()
    again = messages(page).nth(1)
    expect(again.get_by_role("heading", name="Tides", level=3)).to_be_visible()
    expect(again.get_by_role("table").get_by_role("cell", name="Moon")).to_be_visible()
    expect(again.locator("pre code")).to_contain_text("def high_tides(days):")


def test_hostile_markdown_stays_inert(page: Page, backend: FakeBackend) -> None:
    say_exactly(backend, HOSTILE)
    dialogs: list[str] = []
    requested: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def note(request: Request) -> None:
        requested.append(request.url)

    page.on("dialog", dismiss)
    page.on("request", note)
    register(page)
    answer = ask(page, "say something odd")
    log = page.get_by_role("log")

    def inert() -> None:
        # javascript: and data: links stay text; a relative one is not followed either.
        expect(answer.get_by_text("[click me](javascript:alert(1))")).to_be_visible()
        expect(answer.get_by_role("link", name="click me")).to_have_count(0)
        expect(answer.get_by_role("link", name="data")).to_have_count(0)
        expect(answer.get_by_role("link", name="here")).to_have_count(0)
        expect(answer.locator(".link-refused")).to_have_text("here")
        # Raw HTML is text, in a paragraph or in code.
        expect(answer).to_contain_text("<img src=x onerror=alert(3)>")
        expect(answer).to_contain_text("<script>alert(4)</script>")
        expect(answer.locator("pre code")).to_contain_text("<script>alert(5)</script>")
        # Images are links to them, named by their alt text, and never loaded.
        tracker = answer.get_by_role("link", name="Image: tracker")
        expect(tracker).to_have_attribute("href", "http://127.0.0.1:9/pixel.png")
        expect(tracker).to_have_attribute("rel", "noopener noreferrer")
        expect(answer.get_by_role("link", name="Image: logo")).to_be_visible()
        expect(answer.get_by_role("link", name="a fine link")).to_have_attribute(
            "href", "https://example.com/page"
        )
        assert log.locator("img, script, iframe, object, embed").count() == 0
        schemes = log.evaluate(
            "node => [...node.querySelectorAll('a')].map(a => [a.protocol, a.rel])"
        )
        assert schemes, schemes
        assert all(
            scheme in ("http:", "https:", "mailto:") and rel == "noopener noreferrer"
            for scheme, rel in schemes
        ), schemes

    inert()
    # Reopened from history, it is as inert.
    page.reload()
    page.get_by_role("complementary", name="Conversations").get_by_role(
        "button", name="say something odd", exact=True
    ).click()
    answer = messages(page).nth(1)
    inert()
    page.wait_for_timeout(300)  # time for anything that would load to ask for it
    loaded = [url for url in requested if re.search(r"pixel|logo|example\.com|/[xy]$", url)]
    assert loaded == []
    assert all(url.startswith(page.url.rstrip("/")) for url in requested), requested
    assert dialogs == []


def test_copy_puts_the_code_on_the_clipboard(
    browser: Browser, site: FakeApi, backend: FakeBackend
) -> None:
    say_exactly(backend, f"Read it line by line:\n\n```python\n{CODE}\n```\n\nThat is all.")
    with open_page(browser, site, permissions=CLIPBOARD) as page:
        register(page)
        answer = ask(page, "How do I read a file?")
        copy = answer.get_by_role("button", name="Copy python code")
        copy.click()
        expect(copy).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == CODE
        expect(copy).to_have_text("Copy", timeout=5000)


def test_a_password_change_ends_other_sessions(browser: Browser, site: FakeApi, page: Page) -> None:
    email = register(page)
    with open_page(browser, site) as other:
        log_in(other, email)
        open_view(page, "Account")
        form = page.get_by_role("form", name="Change your password")
        form.get_by_label("Current password").fill(PASSWORD)
        form.get_by_label("New password").fill("a-new-horse-43")
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("alert").filter(has_text="Password changed")).to_be_visible()
        expect(form.get_by_label("New password")).to_have_value("")
        # The other browser's session is over: its next request is refused, and it says so.
        composer(other).fill("still here?")
        composer(other).press("Enter")
        expect(other.get_by_role("button", name="Log in")).to_be_visible()
        expect(other.get_by_role("alert").first).to_contain_text("Your session has ended")
        status = other.evaluate("fetch('/auth/session').then(r => r.status)")
        assert status == 401
        # The old password is refused there; the new one logs in.
        other.get_by_label("Email", exact=True).fill(email)
        other.get_by_label("Password", exact=True).fill(PASSWORD)
        other.get_by_role("button", name="Log in").click()
        expect(other.get_by_role("alert").first).to_contain_text("invalid email or password")
        log_in(other, email, "a-new-horse-43")
    # The session that changed it goes on.
    open_view(page, "Chat")
    ask(page, "and here?")
    expect(page.get_by_role("alert").filter(has_text=re.compile(r"\w"))).to_have_count(0)


def test_email_change_and_log_out_everywhere(browser: Browser, site: FakeApi, page: Page) -> None:
    email = register(page)
    moved = "moved-" + email
    open_view(page, "Account")
    expect(page.locator("#account-email")).to_have_text(email)
    form = page.get_by_role("form", name="Change your email")
    form.get_by_label("New email").fill(moved)
    form.get_by_label("Confirm with your password").fill("not-my-password")
    form.get_by_role("button", name="Change email").click()
    expect(page.get_by_role("alert").filter(has_text="current_password is wrong")).to_be_visible()
    form.get_by_label("Confirm with your password").fill(PASSWORD)
    form.get_by_role("button", name="Change email").click()
    expect(page.get_by_role("alert").filter(has_text="Email changed")).to_be_visible()
    expect(page.locator("#whoami")).to_have_text(moved)
    with open_page(browser, site) as other:
        log_in(other, moved)
        page.get_by_role("button", name="Log out everywhere").click()
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        expect(page.get_by_role("alert").first).to_have_text("You are logged out everywhere.")
        other.reload()
        expect(other.get_by_role("button", name="Log in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def test_usage_moves_after_a_chat(page: Page) -> None:
    fresh_minute()  # this minute's counts stay this minute's while the test runs
    register(page)
    open_view(page, "Account")
    usage = page.get_by_role("region", name="Usage")
    requests = usage.get_by_role("row", name=re.compile("^Requests in the last minute"))
    today = usage.get_by_role("row", name=re.compile("^Tokens today"))
    expect(requests.locator(".used")).to_have_text("0 of 600")
    expect(today.locator(".used")).to_have_text("0 of 5000000")
    expect(usage.get_by_role("meter", name=re.compile("^Tokens today"))).to_be_visible()
    open_view(page, "Chat")
    ask(page, "How many tokens is this?")
    open_view(page, "Account")
    expect(requests.locator(".used")).to_have_text("1 of 600")
    expect(today.locator(".used")).not_to_have_text("0 of 5000000")
    spent = number_in(today.locator(".used"))
    assert spent > 0
    minute = usage.get_by_role("row", name=re.compile("^Tokens this minute"))
    assert number_in(minute.locator(".used")) == spent
    # Refresh reads the counters again (the same numbers: nothing was sent since).
    usage.get_by_role("button", name="Refresh usage").click()
    expect(today.locator(".used")).to_have_text(f"{spent} of 5000000")


def test_an_admin_creates_a_profile_and_a_chat_uses_it(
    page: Page, site: FakeApi, backend: FakeBackend
) -> None:
    email = register(page)
    off_loop(site.make_admin, email)
    page.reload()
    open_view(page, "Admin")
    section = page.get_by_role("region", name="Profiles")
    form = section.get_by_role("form", name="New profile")
    name = f"Pirate {email[7:13]}"
    form.get_by_label("Name").fill(name)
    form.get_by_label("System prompt").fill("You are a pirate. Answer in one line.")
    form.get_by_label("Temperature").fill("0.2")
    form.get_by_label("Max tokens").fill("9")
    form.get_by_role("button", name="Create profile").click()
    stored = name.lower()
    expect(section.get_by_role("alert")).to_have_text(f"Profile {stored} created.")
    row = section.get_by_role("table", name="Profiles").get_by_role("row").filter(has_text=stored)
    expect(row).to_contain_text("You are a pirate.")
    expect(row).to_contain_text("temperature 0.2, max_tokens 9")

    # A chat that names it gets its system prompt and its settings.
    open_view(page, "Chat")
    page.locator("summary", has_text="Settings").click()
    page.get_by_label("Profile", exact=True).fill(stored)
    ask(page, "Where is the treasure?")
    prompt, params = backend.prompts[-1], backend.params[-1]
    assert prompt.messages[0].role == "system"
    assert prompt.messages[0].content == "You are a pirate. Answer in one line."
    assert params.temperature == 0.2
    assert params.max_tokens == 9

    # Edited: the next chat reads the new prompt.
    open_view(page, "Admin")
    row.get_by_role("button", name=f"Edit {stored}").click()
    editor = section.get_by_role("form", name=f"Edit {stored}")
    expect(editor.get_by_label("System prompt")).to_have_value(
        "You are a pirate. Answer in one line."
    )
    expect(editor.get_by_label("Temperature")).to_have_value("0.2")
    editor.get_by_label("System prompt").fill("You are a polite pirate.")
    editor.get_by_role("button", name="Save profile").click()
    expect(section.get_by_role("alert")).to_have_text(f"Profile {stored} saved.")
    expect(row).to_contain_text("You are a polite pirate.")
    open_view(page, "Chat")
    ask(page, "And the map?")
    assert backend.prompts[-1].messages[0].content == "You are a polite pirate."

    # Deleted, behind a confirmation.
    open_view(page, "Admin")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Delete {stored}").click()
    expect(section.get_by_role("alert")).to_have_text(f"Profile {stored} deleted.")
    expect(row).to_have_count(0)


def test_tool_calls_and_results_show_as_labelled_blocks(
    page: Page, site: FakeApi, backend: FakeBackend
) -> None:
    email = register(page)
    question = "What is the weather in Paris?"
    with httpx.Client(base_url=site.base_url, timeout=30) as client:
        login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        first = client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": question}],
                "tools": [WEATHER_TOOL],
                "tool_choice": "required",
            },
        ).json()
        call = first["choices"][0]["message"]["tool_calls"][0]
        result = {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": "<script>alert(1)</script>Sunny, 21 C",
        }
        answer = client.post(
            "/v1/chat/completions",
            json={
                "messages": [result],
                "tools": [WEATHER_TOOL],
                "tool_choice": "none",
                "conversation_id": first["conversation_id"],
            },
        )
        assert answer.status_code == 200, answer.text
    page.reload()
    page.get_by_role("complementary", name="Conversations").get_by_role(
        "button", name=question, exact=True
    ).click()
    expect(messages(page)).to_have_count(4)
    called = page.get_by_role("group", name="Tool call: get_weather")
    expect(called).to_contain_text('"city": "sea"')
    expect(messages(page).nth(1)).to_contain_text("Assistant")
    returned = page.get_by_role("group", name="Result of get_weather")
    expect(returned).to_contain_text("Sunny, 21 C")
    expect(messages(page).nth(2)).to_contain_text("Tool result")
    assert page.get_by_role("log").locator("script").count() == 0


def tab_to(page: Page, target: Locator, key: str = "Tab", limit: int = 40) -> None:
    """Press Tab (or Shift+Tab) until `target` has the focus, as a keyboard user gets there."""
    for _ in range(limit):
        if target.evaluate("node => node === document.activeElement"):
            return
        page.keyboard.press(key)
    raise AssertionError(f"{key} never reached {target}")


def fits(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_account_markdown_and_profiles_by_keyboard_at_phone_width(
    browser: Browser, site: FakeApi, backend: FakeBackend
) -> None:
    wide = "x = [" + ", ".join(str(i) for i in range(60)) + "]"
    table = "| a | b |\n|---|---|\n| 1 | 2 |"
    say_exactly(backend, f"A **long** line:\n\n```python\n{wide}\n```\n\n{table}")
    phone = {"width": 375, "height": 740}
    with open_page(browser, site, viewport=phone, permissions=CLIPBOARD) as page:
        email = register(page)
        answer = ask(page, "a long line")
        # The code scrolls inside its block; the page does not scroll sideways.
        assert fits(page)
        pre = answer.locator("pre")
        assert pre.evaluate("node => node.scrollWidth > node.clientWidth")
        copy = answer.get_by_role("button", name="Copy python code")
        tab_to(page, copy, "Shift+Tab")  # from the composer, back into the answer
        page.keyboard.press("Enter")
        expect(copy).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == wide

        account = page.get_by_role("button", name="Account")
        tab_to(page, account, "Shift+Tab")
        expect(account).to_be_in_viewport()
        page.keyboard.press("Enter")
        usage = page.get_by_role("region", name="Usage")
        requests_row = usage.get_by_role("row", name=re.compile("^Requests in the last minute"))
        expect(requests_row).to_be_visible()
        assert fits(page)
        tab_to(page, page.get_by_label("Current password"))
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Tab")
        page.keyboard.type("phone-horse-44")
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert").filter(has_text="Password changed")).to_be_visible()
        tab_to(page, page.get_by_role("button", name="Log out everywhere"))
        expect(page.get_by_role("button", name="Log out everywhere")).to_be_focused()

        off_loop(site.make_admin, email)
        page.reload()
        admin = page.get_by_role("button", name="Admin")
        tab_to(page, admin, "Shift+Tab")
        page.keyboard.press("Enter")
        name = page.get_by_role("form", name="New profile").get_by_label("Name")
        tab_to(page, name, "Shift+Tab")  # backwards from the top: the form ends the page
        page.keyboard.type(f"Phone {email[7:13]}")
        page.keyboard.press("Tab")  # Description
        page.keyboard.press("Tab")  # System prompt
        page.keyboard.type("Answer briefly.")
        page.keyboard.press("Tab")  # Temperature
        page.keyboard.type("0.5")
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert").filter(has_text="created")).to_be_visible()
        assert fits(page)


def test_screenshot_of_an_answer_with_code(page: Page, backend: FakeBackend) -> None:
    say_exactly(
        backend,
        "Open the file in a `with` block, so that it is **closed** even if an error "
        "occurs, and loop over it:\n\n"
        f"```python\n{CODE}\n```\n\n"
        "- Each `line` keeps its newline: `rstrip()` takes it off.\n"
        "- The file is read as you go, so a large one needs little memory.",
    )
    register(page, "grace@example.com")  # the same picture every run: nothing random on it
    answer = ask(page, "How do I read a text file line by line in Python?")
    expect(answer.locator("pre code")).to_have_text(CODE, use_inner_text=True)
    path = DOCS / "chat-answer.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000


# What would change the admin's picture from one run to the next: the users above the models
# (how many, so where the models section falls between pixels), and the download's file
# name, which ends in a hash of its URL (whose port changes). Hidden for the picture only,
# through the DOM (the CSP refuses a stylesheet injected for the screenshot).
STEADY = """(steady) => {
    for (const node of document.getElementById("admin-view").children) {
        if (node.id !== "models-section") node.hidden = steady;
    }
    const file = document.querySelector("#model-row-smollm2-copy td:nth-child(3) code");
    file.style.visibility = steady ? "hidden" : "";
}"""


def test_screenshot_of_the_admin_model_view(
    page: Page, site: FakeApi, model_files: FileServer
) -> None:
    register(page, "admin@example.com")
    off_loop(site.make_admin, "admin@example.com")
    page.reload()
    open_view(page, "Admin")
    size = (model_files.root / "smol.gguf").stat().st_size
    # The download stops at half the file and its resume waits: the bar holds at 50%.
    model_files.cut_at = size // 2
    model_files.resume_gate = gate = threading.Event()
    try:
        form = page.get_by_role("form", name="Add a model")
        form.get_by_label("Alias").fill("smollm2-copy")
        form.get_by_label("Source").select_option("url")
        form.get_by_label("Location").fill(f"{model_files.base_url}/smol.gguf")
        form.get_by_role("button", name="Add model").click()
        row = (
            page.get_by_role("table", name="Models")
            .get_by_role("row")
            .filter(has_text="smollm2-copy")
        )
        expect(row).to_contain_text("downloading 50%")
        expect(row.get_by_role("progressbar")).to_have_attribute("value", "0.5")
        path = DOCS / "admin-models.png"
        page.evaluate(STEADY, True)
        box = page.get_by_role("region", name="Models").bounding_box()
        assert box is not None
        page.screenshot(  # the section, with a margin
            path=str(path),
            clip={
                "x": box["x"] - 12,
                "y": box["y"] - 10,
                "width": box["width"] + 24,
                "height": box["height"] + 20,
            },
        )
        page.evaluate(STEADY, False)
        assert path.stat().st_size > 5_000
    finally:
        gate.set()
        model_files.resume_gate = None
        model_files.cut_at = None
    expect(row.get_by_role("button", name="Unload smollm2-copy")).to_be_visible(timeout=60_000)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete smollm2-copy").click()
    expect(row).to_have_count(0)
