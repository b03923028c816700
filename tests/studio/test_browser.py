"""The acceptance flow in a real browser (Debian's Chromium through Playwright), as a new user would do it:
sign in, create a bot from the customer-service template, add an example, train, ask the test panel a
paraphrase, paste the widget snippet into a page on another port and chat through it, rate an answer, see
it on the dashboard, turn an unanswered question into an example and retrain. Screenshots of each page go
to build/screenshots/."""
import http.server
import re
import shutil
import socket
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import uvicorn

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's Chromium: apt-get install -y chromium"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def servers(tmp_path, monkeypatch, tiny_gpt2):
    """The lmforge server (API + studio, MiniLM embeddings) and a plain static server on another port
    for the page that embeds the widget."""
    pytest.importorskip("playwright")
    monkeypatch.setenv("LMFORGE_STUDIO_EMBEDDER", "minilm")
    monkeypatch.setenv("LMFORGE_STUDIO_TRAIN_IN_THREAD", "true")
    from lmforge.serve import Settings, create_app
    from lmforge.store import Database
    from lmforge.studio import ensure_admin

    settings = Settings(home=tmp_path / "home", port=free_port())
    db = Database(settings.database)
    db.migrate()
    password = ensure_admin(db)
    db.dispose()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, [tiny_gpt2]), host="127.0.0.1", port=settings.port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    site = tmp_path / "site"
    site.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    static = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=static.serve_forever, daemon=True).start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield dict(url=f"http://127.0.0.1:{settings.port}", password=password, site=site,
               site_url=f"http://127.0.0.1:{static.server_address[1]}")
    static.shutdown()
    server.should_exit = True
    thread.join(10)


def test_new_user_builds_deploys_monitors_and_improves_a_bot(servers):
    from playwright.sync_api import expect, sync_playwright

    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)
    url = servers["url"]
    expect.set_options(timeout=30_000)  # a loaded CI machine answers slowly
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        shot = lambda name: page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

        # sign in with the admin account of the first start
        page.goto(f"{url}/studio/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot("01-sign-in")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(servers["password"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Your bots")).to_be_visible()

        # create a bot from the customer-service template
        page.get_by_label("Customer service FAQ").check()
        page.get_by_label("Name", exact=True).fill("Shop helper")
        shot("02-home")
        page.get_by_role("button", name="Create bot").click()
        expect(page.get_by_role("heading", name="Shop helper")).to_be_visible()
        bot_url = page.url.split("#")[0]

        # add an example: a new intent with its answer
        row = page.locator("#intent-rows tr.new").last
        row.locator("input[name=name]").fill("gift_cards")
        row.locator("textarea[name=examples]").fill("Do you sell gift cards?")
        row.locator("textarea[name=answer]").fill("Yes! Gift cards from 10 to 100 euros, in every shop.")
        page.get_by_role("button", name="Save intents").click()
        expect(page.locator("p.ok")).to_contain_text("intents")
        # allow the widget's page (another port = another origin)
        page.locator("#allowed-origins").fill(servers["site_url"])
        page.get_by_role("button", name="Save settings").click()
        expect(page.locator("p.ok")).to_contain_text("settings")

        # train, with visible progress
        page.goto(bot_url + "#train")
        page.get_by_role("button", name="Train").click()
        expect(page.locator("#train-status")).to_have_attribute("data-status", "done", timeout=60_000)
        expect(page.locator("#train-status")).to_contain_text("trained on")

        # the test panel answers a paraphrase of the new example, showing the intent and confidence
        page.locator("#test-input").fill("can I buy a gift card?")
        page.locator("#test-form button").click()
        answer = page.locator("#test-log p.bot").last
        expect(answer).to_contain_text("Gift cards from 10 to 100 euros")
        expect(answer.locator(".why")).to_contain_text("intent: gift_cards")
        expect(answer.locator(".why")).to_contain_text("confidence")
        page.locator("#test-input").fill("<script>alert(1)</script>")
        page.locator("#test-form button").click()
        expect(page.locator("#test-log p.user").last).to_have_text("<script>alert(1)</script>")
        shot("03-builder-test-panel")

        # the widget snippet, pasted into a page served from another origin
        snippet = page.locator("#widget-snippet").inner_text()
        assert re.fullmatch(r'<script src="http://127\.0\.0\.1:\d+/bots/bot_[\w-]+/widget\.js" async></script>',
                            snippet.strip())
        (servers["site"] / "index.html").write_text(
            f"<!doctype html><html><head><title>Acme shop</title></head><body><h1>Acme shop</h1>{snippet}</body></html>")
        site = browser.new_page(viewport={"width": 1000, "height": 700})
        site.set_default_timeout(30_000)
        site.goto(servers["site_url"] + "/index.html")
        widget = site.locator("#lmforge-widget")
        widget.locator("input").fill("where is my parcel?")
        widget.locator("button[type=submit]").click()
        expect(widget.locator(".msg.bot").last).to_contain_text("track your order")
        widget.locator(".msg.bot").last.get_by_role("button", name="Helpful", exact=True).click()
        expect(widget.locator(".rate").last).to_contain_text("Thanks")
        widget.locator("input").fill("can I bring my dog into the shop?")
        widget.locator("button[type=submit]").click()
        expect(widget.locator(".msg.bot").nth(2)).to_contain_text("Sorry")
        site.screenshot(path=str(SHOTS / "04-widget-on-another-origin.png"))

        # the dashboard shows the conversation, the rating and the unanswered question
        page.goto(bot_url + "/monitor")
        expect(page.locator("#stat-up")).to_have_text("1")
        expect(page.locator("#recent")).to_contain_text("where is my parcel?")
        expect(page.locator("#recent")).to_contain_text("widget")
        group = page.locator("#unanswered .group", has_text="can I bring my dog into the shop?")
        expect(group).to_be_visible()
        shot("05-monitor")

        # improve: the unanswered question becomes an example of a new intent; retrain; the test panel knows it
        group.locator("input[name=intent]").fill("pets")
        group.locator("input[name=answer]").fill("Dogs on a lead are welcome in all our shops.")
        group.get_by_role("button", name="Add as example & retrain").click()
        expect(page.locator("p.ok")).to_contain_text("retraining")
        page.goto(bot_url + "#train")
        expect(page.locator("#train-status")).to_have_attribute("data-status", "done", timeout=60_000)
        expect(page.locator("#train-status")).to_have_attribute("data-version", "2")
        page.locator("#test-input").fill("may I bring my dog into the shop?")
        page.locator("#test-form button").click()
        answer = page.locator("#test-log p.bot").last
        expect(answer).to_contain_text("Dogs on a lead are welcome")
        expect(answer.locator(".why")).to_contain_text("intent: pets")
        shot("06-builder-after-improve")

        # the playground streams an answer with its token counts and cost, and shows the code for it
        page.goto(url + "/studio/playground")
        page.locator("#pg-prompt").fill("hello")
        page.locator("#pg-max-tokens").fill("8")
        page.locator("#pg-stop").fill("zzz")
        page.locator("#pg-keep").check()
        page.get_by_role("button", name="Run").click()
        expect(page.locator("#pg-usage")).to_have_attribute("data-done", "1")
        expect(page.locator("#pg-usage")).to_contain_text("completion")
        expect(page.locator("#pg-usage")).to_contain_text("cost $")
        expect(page.locator("#pg-history p")).to_have_count(2)  # the chat keeps the turn: user + assistant
        page.get_by_role("button", name="View code").click()
        expect(page.locator("#pg-code-curl")).to_contain_text("/v1/chat/completions")
        expect(page.locator("#pg-code-curl")).to_contain_text('"stop"')
        expect(page.locator("#pg-code-python")).to_contain_text("client.chat.completions.create(")
        shot("07-playground")
        page.goto(url + "/studio/keys")
        expect(page.locator("#usage")).to_contain_text("tiny-gpt2")
        shot("08-keys-usage")
        browser.close()
    assert len(list(SHOTS.glob("*.png"))) == 8
