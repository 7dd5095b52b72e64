"""What the browser tests do as a person would: register, log in, find the composer and the
messages."""

from __future__ import annotations

import uuid

from playwright.sync_api import Locator, Page, expect

from tests.support import PASSWORD


def new_email() -> str:
    return f"person-{uuid.uuid4().hex[:10]}@example.com"


def register(page: Page, email: str | None = None) -> str:
    email = email or new_email()
    page.goto("/")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("button", name="Log out", exact=True)).to_be_visible()
    return email


def log_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out", exact=True)).to_be_visible()


def messages(page: Page) -> Locator:
    return page.get_by_role("log").get_by_role("listitem")


def composer(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message", exact=True)


def ask(page: Page, question: str) -> Locator:
    """Send `question` and wait for its whole answer; the answer's list item."""
    before = messages(page).count()
    composer(page).fill(question)
    composer(page).press("Enter")
    expect(messages(page)).to_have_count(before + 2)
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    return messages(page).nth(before + 1)
