"""The dashboard in headless Chromium (Debian's chromium and chromium-driver,
which .ci/run installs), driven by selenium against a real server."""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pika
import pytest

from .conftest import ManagedServerThread, dead_letter_setup

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")

if CHROMIUM is not None and CHROMEDRIVER is not None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

#: Where screenshots for docs/ go when asked (make screenshots).
SCREENSHOTS = os.environ.get("AMQLITE_SCREENSHOTS")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900", "--lang=en-US"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    # The dashboard works under its own Content-Security-Policy: nothing it does is refused.
    refused = [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]
    driver.quit()
    assert not refused, refused


def wait(driver: webdriver.Chrome, condition: object, timeout: float = 15) -> object:
    return WebDriverWait(driver, timeout).until(condition)  # type: ignore[arg-type]


def log_in(driver: webdriver.Chrome, server: ManagedServerThread, user: str = "guest", password: str = "guest",
           page: str = "login") -> None:
    """Open ``page`` (the login form shows first) and log in."""
    driver.get(f"http://127.0.0.1:{server.management_port}/#/{page}")
    wait(driver, expected_conditions.presence_of_element_located((By.ID, "username")))
    for field, value in (("username", user), ("password", password)):
        driver.find_element(By.ID, field).clear()
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()


def text_of(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def queue_order(driver: webdriver.Chrome) -> list[str]:
    return [str(row.get_attribute("data-name")) for row in driver.find_elements(By.CSS_SELECTOR, "#queues tbody tr")]


def screenshot_overview(driver: webdriver.Chrome, channel: Any) -> None:
    """The overview after half a minute of traffic, so that the rate chart has lines."""
    channel.queue_declare("orders.dlq")
    channel.queue_declare("orders", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "orders.dlq"})
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < 30:
        batch = int(20 + 15 * math.sin(elapsed / 4))
        for n in range(batch):
            channel.basic_publish("", "orders", b"order")
        for n in range(batch - 3):  # a backlog grows; one in ten fails
            method, _, _ = channel.basic_get("orders")
            if n % 10:
                channel.basic_ack(method.delivery_tag)
            else:
                channel.basic_reject(method.delivery_tag, requeue=False)
        time.sleep(0.1)
    driver.save_screenshot(str(Path(SCREENSHOTS) / "dashboard-overview.png"))  # type: ignore[arg-type]
    channel.queue_delete("orders")
    channel.queue_delete("orders.dlq")


def test_log_in_and_see_a_queue_depth_change(managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("watched")
    log_in(browser, managed)
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "who"), "guest"))
    if SCREENSHOTS:
        screenshot_overview(browser, channel)
    channel.queue_declare("other")
    channel.basic_publish("", "other", b"x")
    browser.get(f"http://127.0.0.1:{managed.management_port}/#/queues")
    row = "#queues tr[data-name='watched']"
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, row)))
    assert text_of(browser, f"{row} td:nth-child(3)") == "0"
    messages = browser.find_element(By.CSS_SELECTOR, "#queues th[data-key='messages']")
    messages.click()
    messages.click()  # the second click: most messages first
    assert queue_order(browser) == ["other", "watched"]
    for n in range(3):
        channel.basic_publish("", "watched", b"m%d" % n)
    # The page polls every 5 s: the depth changes without a reload, and the
    # table it builds anew keeps the order the user chose.
    wait(browser, expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, f"{row} td:nth-child(3)"), "3"))
    assert queue_order(browser) == ["watched", "other"]
    browser.find_element(By.ID, "filter").send_keys("WATCH")  # any case
    assert queue_order(browser) == ["watched"]
    browser.find_element(By.ID, "filter").send_keys("nothing-like-it")
    assert not browser.find_elements(By.CSS_SELECTOR, row)
    connection.close()


def test_redrive_a_dead_letter_queue_from_its_page(managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    dead_letter_setup(channel, "work", "parking")  # "parking": not named as a dead-letter queue
    for n in range(4):
        channel.basic_publish("", "work", b"job %d" % n)
    for _ in range(4):
        method, _, _ = channel.basic_get("work")
        channel.basic_reject(method.delivery_tag, requeue=False)
    assert channel.queue_declare("parking", passive=True).method.message_count == 4

    log_in(browser, managed, page="queue/%2F/parking")  # a link to the queue, as an alert would give
    wait(browser, expected_conditions.element_to_be_clickable((By.ID, "get")))  # there, once logged in
    # Redrive shows on a dead-letter queue: "work" dead-letters through an exchange it is bound to ...
    assert browser.find_element(By.ID, "redrive").is_displayed()
    channel.queue_unbind("parking", "dlx")
    browser.refresh()
    get = wait(browser, expected_conditions.element_to_be_clickable((By.ID, "get")))
    # ... and, once nothing points here, as soon as Get shows messages with x-death.
    assert not browser.find_element(By.ID, "redrive").is_displayed()
    get.click()  # type: ignore[union-attr]
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".message table")))
    assert browser.find_element(By.ID, "redrive").is_displayed()
    death = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, ".message table tbody tr td")][:3]
    assert death == ["rejected", "work", "1"]  # x-death: reason, queue, count
    if SCREENSHOTS:
        browser.save_screenshot(str(Path(SCREENSHOTS) / "dashboard-queue.png"))
    browser.find_element(By.ID, "redrive").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "redrive-result"), "Moved 4 message(s)."))
    assert channel.queue_declare("work", passive=True).method.message_count == 4
    assert channel.queue_declare("parking", passive=True).method.message_count == 0
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "queue-messages"), "0"))

    browser.find_element(By.ID, "publish-payload").send_keys("by hand")
    browser.find_element(By.ID, "publish").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "publish-result"), "Published."))
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "queue-messages"), "1"))
    _, _, body = channel.basic_get("parking", auto_ack=True)
    assert body == b"by hand"

    channel.queue_delete("parking")  # behind the page's back: Get shows the API's error
    browser.find_element(By.ID, "get").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "error"), "Object Not Found: Not Found"))
    # ... where the eye is: beside the forms, and at the top of the window.
    assert text_of(browser, "#action-error") == "Object Not Found: Not Found"
    error, main = browser.find_element(By.ID, "error"), browser.find_element(By.ID, "main")
    assert error.location["y"] < main.location["y"]
    connection.close()


def test_a_bad_password_is_refused(managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    log_in(browser, managed, password="wrong")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "login-message"), "Login failed"))
    assert not browser.find_element(By.ID, "nav").is_displayed()
    log_in(browser, managed, user="plain", password="pw")  # a user without a management tag
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "login-message"), "Not management user"))


def test_close_a_connection_from_the_connections_page(managed: ManagedServerThread,
                                                      browser: webdriver.Chrome) -> None:
    victim = managed.connect()
    log_in(browser, managed)
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "who"), "guest"))
    browser.get(f"http://127.0.0.1:{managed.management_port}/#/connections")
    close = "#connections button.close"
    wait(browser, expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, close))).click()  # type: ignore[union-attr]
    asked = wait(browser, expected_conditions.alert_is_present())
    assert str(asked.text).startswith("Close connection ")  # type: ignore[attr-defined]
    asked.dismiss()  # type: ignore[attr-defined]
    victim.process_data_events(time_limit=0.3)
    assert victim.is_open  # a misclick closes nothing
    browser.find_element(By.CSS_SELECTOR, close).click()
    wait(browser, expected_conditions.alert_is_present()).accept()  # type: ignore[attr-defined]
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(50):
            victim.process_data_events(time_limit=0.1)
    assert closed.value.reply_text == "CONNECTION_FORCED - Closed from the amqlite dashboard"


def test_a_streams_page_shows_its_offsets_and_its_groups(managed: ManagedServerThread,
                                                          browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("signups", durable=True, arguments={"x-queue-type": "stream"})
    for n in range(5):
        channel.basic_publish("", "signups", b"user-%d" % n)
    reader = managed.connect().channel()
    reader.basic_qos(prefetch_count=10)
    tags: list[int] = []
    reader.basic_consume("signups", lambda ch, method, props, body: tags.append(method.delivery_tag),
                         arguments={"x-stream-group": "mailer", "x-stream-offset": "first"})
    while len(tags) < 5:
        reader.connection.process_data_events(time_limit=0.05)
    reader.basic_ack(tags[2], multiple=True)  # offsets 0-2 done
    reader.connection.process_data_events(time_limit=0.1)
    log_in(browser, managed, page="queue/%2F/signups")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "stream-offsets"), "offsets 0 to 4"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Stream signups"
    # Get and Purge always fail on a stream: not offered.
    assert not browser.find_elements(By.ID, "get") and not browser.find_elements(By.ID, "purge")
    assert browser.find_element(By.ID, "publish").is_displayed()
    row = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#stream-groups tbody td")]
    assert row[:3] == ["mailer", "3", "2"]
    reader.connection.close()
    connection.close()


def test_a_refused_action_shows_an_error_and_keeps_the_user_logged_in(managed: ManagedServerThread,
                                                                     browser: webdriver.Chrome) -> None:
    """A monitoring user sees everyone's connections but may not close
    another user's: RabbitMQ's 401 not_authorised is an error on the page,
    not the end of the session (only credentials that fail do that)."""
    victim = managed.connect()
    log_in(browser, managed, user="monitor", password="pw")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "who"), "monitor"))
    browser.get(f"http://127.0.0.1:{managed.management_port}/#/connections")
    close = "#connections button.close"
    wait(browser, expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, close))).click()  # type: ignore[union-attr]
    wait(browser, expected_conditions.alert_is_present()).accept()  # type: ignore[attr-defined]
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "error"), "not authorised to access"))
    assert browser.current_url.endswith("#/connections")
    assert browser.find_element(By.ID, "nav").is_displayed()
    assert text_of(browser, "#who") == "monitor"
    victim.process_data_events(time_limit=0.2)
    assert victim.is_open
    victim.close()


def test_a_missing_queue_shows_nothing_of_the_queue_before(managed: ManagedServerThread,
                                                            browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("present")
    for _ in range(1234):
        channel.basic_publish("", "present", b"x")
    log_in(browser, managed, page="queue/%2F/present")
    # Counts with thousands separators.
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "queue-messages"), "1,234"))
    browser.get(f"http://127.0.0.1:{managed.management_port}/#/queue/%2F/absent")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "error"), "Object Not Found"))
    assert not browser.find_elements(By.ID, "queue-messages")
    assert "present" not in text_of(browser, "#main")
    connection.close()


def test_connections_show_the_name_the_client_gave(managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    named = managed.connect(client_properties={"connection_name": "billing-worker"})
    unnamed = managed.connect()
    log_in(browser, managed, page="connections")
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#connections tbody tr")))
    wait(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#connections tbody tr")) == 2)
    names = sorted(row.find_element(By.CSS_SELECTOR, "td").text
                   for row in browser.find_elements(By.CSS_SELECTOR, "#connections tbody tr"))
    assert names == ["", "billing-worker"]
    named.close()
    unnamed.close()


def test_the_rate_chart_has_a_time_axis(managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    log_in(browser, managed)
    # Two samples of the overview (the page polls every 5 s) make the first rate.
    wait(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#rates-axis span")) == 3, timeout=20)
    labels = [span.text for span in browser.find_elements(By.CSS_SELECTOR, "#rates-axis span")]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d( [AP]M)?", label) for label in labels), labels
    assert labels[0] <= labels[2] or labels[2].startswith("00")  # oldest on the left


def test_a_delivery_out_too_long_is_highlighted(managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    """Queues and a queue's consumers show the oldest unacked delivery's age,
    highlighted past five minutes; grouped queues show their groups."""
    from .test_long_tasks_and_groups import age_deliveries, hold_one

    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("renders", arguments={"x-message-group-header": "customer"})
    channel.queue_declare("quick")
    channel.queue_declare("idle")
    channel.basic_publish("", "renders", b"frame", pika.BasicProperties(headers={"customer": "acme"}))
    channel.basic_publish("", "quick", b"x")
    workers = [hold_one(managed, "renders"), hold_one(managed, "quick")]
    age_deliveries(managed, 400)
    log_in(browser, managed, page="queues")
    late = "#queues tr[data-name='renders'] td:last-child span.late"
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, late)))
    assert text_of(browser, late).endswith("min")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#queues span.late")) == 2  # not idle's
    browser.get(f"http://127.0.0.1:{managed.management_port}/#/queue/%2F/renders")
    wait(browser, expected_conditions.presence_of_element_located((By.ID, "queue-groups")))
    assert text_of(browser, "#queue-groups") == "1"
    assert browser.find_elements(By.CSS_SELECTOR, "#queue-oldest-unacked span.late")
    assert browser.find_elements(By.CSS_SELECTOR, "#queue-consumers td span.late")
    for worker, _ in workers:
        worker.connection.close()
    connection.close()


def test_browse_a_dead_letter_queue_and_redrive_what_a_filter_matches(managed: ManagedServerThread,
                                                                     browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    dead_letter_setup(channel, "work", "parking")
    for n in range(25):
        customer = "acme" if n % 2 else "initech"
        channel.basic_publish("", "work", b"job %d" % n, pika.BasicProperties(headers={"customer": customer}))
        method, _, _ = channel.basic_get("work")
        channel.basic_reject(method.delivery_tag, requeue=False)

    log_in(browser, managed, page="queue/%2F/parking")
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#browse tbody tr")))
    assert [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#browse th")] == \
        ["Position", "Routing key", "Headers", "x-death", "Body"]

    def rows() -> list[list[str]]:
        return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#browse tbody tr")]

    assert rows()[0] == ["0", "work", "customer=initech", "rejected in work ×1", "job 0"]
    assert len(rows()) == 20 and text_of(browser, "#browse-summary") == "Positions 1 to 20 of 25 ready"
    browser.find_element(By.ID, "browse-next").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "browse-summary"), "Positions 21 to 25"))
    assert [row[4] for row in rows()] == [f"job {n}" for n in range(20, 25)]
    assert not browser.find_element(By.ID, "browse-next").is_enabled()
    browser.find_element(By.ID, "browse-previous").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "browse-summary"), "Positions 1 to 20"))

    browser.find_element(By.ID, "filter-header").send_keys("customer=acme")
    browser.find_element(By.ID, "browse-button").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, "#browse tbody tr td"), "1"))
    assert [row[0] for row in rows()] == [str(n) for n in range(1, 25, 2)]
    assert {row[2] for row in rows()} == {"customer=acme"}
    # Browsing took nothing and marked nothing.
    assert channel.queue_declare("parking", passive=True).method.message_count == 25

    browser.find_element(By.ID, "redrive-dry").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "redrive-result"), "12 message(s) would move."))
    browser.find_element(By.ID, "redrive-rate").send_keys("40")
    browser.find_element(By.ID, "redrive").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "redrive-result"), "Moved 12 message(s)."))
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "queue-messages"), "13"))
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#redrive-jobs-table tbody tr")))
    job = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#redrive-jobs-table tbody tr td")]
    assert job[1:8] == ["redrive", "done", "12", "12", "0", "where each died", "40"]
    moved = [channel.basic_get("work", auto_ack=True) for _ in range(12)]
    assert [body for _, _, body in moved] == [b"job %d" % n for n in range(1, 25, 2)]
    assert {properties.headers["x-redrive-count"] for _, properties, _ in moved} == {1}

    browser.find_element(By.ID, "filter-header").clear()
    browser.find_element(By.ID, "filter-header").send_keys("customer=initech")
    browser.find_element(By.ID, "filter-min-deaths").send_keys("1")
    browser.find_element(By.ID, "delete-matching").click()
    browser.switch_to.alert.accept()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "delete-result"), "Deleted 13 message(s)."))
    # The delete is listed too; and a job's report outlives the page that started it.
    browser.refresh()
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#redrive-jobs-table tbody tr")))
    states = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")][1:5]
              for tr in browser.find_elements(By.CSS_SELECTOR, "#redrive-jobs-table tbody tr")]
    assert states == [["redrive", "done", "12", "12"], ["delete", "done", "13", "13"]]
    assert channel.queue_declare("parking", passive=True).method.message_count == 0
    connection.close()


def test_browsing_in_the_dashboard_leaves_order_and_redelivered_flags_as_they_were(
        managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("orders")
    for n in range(30):
        channel.basic_publish("", "orders", b"order %d" % n)
    method, _, _ = channel.basic_get("orders")
    channel.basic_nack(method.delivery_tag, requeue=True)  # "order 0" back at the head, redelivered
    log_in(browser, managed, page="queue/%2F/orders")
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#browse tbody tr")))
    browser.find_element(By.ID, "browse-next").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "browse-summary"), "Positions 21 to 30"))
    got = [channel.basic_get("orders", auto_ack=True) for _ in range(30)]
    assert [body for _, _, body in got] == [b"order %d" % n for n in range(30)]
    assert [method.redelivered for method, _, _ in got] == [True] + [False] * 29
    connection.close()


def _cancel_first_fire_second(browser: webdriver.Chrome, table: str, summary: str) -> str:
    """On a table of three scheduled messages: Cancel on the first row,
    then Fire now on the next; the first row's text."""
    rows = f"#{table} tbody tr"
    wait(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, rows)) == 3)
    assert text_of(browser, f"#{table}-summary") == summary
    first = browser.find_elements(By.CSS_SELECTOR, rows)[0]
    text = first.text
    first.find_element(By.CSS_SELECTOR, "button.cancel").click()
    wait(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, rows)) == 2)
    browser.find_elements(By.CSS_SELECTOR, rows)[0].find_element(By.CSS_SELECTOR, "button.fire-now").click()
    return text


def _arrival(channel: Any, queue: str) -> Any:
    """The next message got from ``queue``, waiting up to 10 s for it."""
    deadline = time.monotonic() + 10
    while (got := channel.basic_get(queue, auto_ack=True))[0] is None:
        assert time.monotonic() < deadline, f"nothing arrived in {queue}"
        time.sleep(0.02)
    return got


def test_a_delayed_exchanges_page_lists_its_scheduled_messages_to_cancel_or_fire(
        managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    channel.queue_declare("due", durable=True)
    channel.queue_bind("due", "later", "k")
    channel.confirm_delivery()
    for n in range(3):
        channel.basic_publish("later", "k", b"reminder %d" % n, pika.BasicProperties(
            delivery_mode=2, headers={"x-delay": 3_600_000, "order": f"o{n}"}))
    log_in(browser, managed, page="exchanges")
    link = wait(browser, expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#exchanges a[href*='later']")))
    link.click()  # type: ignore[attr-defined]
    rows = "#scheduled tbody tr"
    first = _cancel_first_fire_second(browser, "scheduled", "3 held")
    assert "reminder 0" in first and "order=o0" in first
    assert _arrival(channel, "due")[2] == b"reminder 1"
    browser.refresh()  # a fired message is routed once read back from disk: not yet when the page reloaded
    wait(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, rows)) == 1)
    assert text_of(browser, "#scheduled-summary") == "1 held" and "reminder 2" in text_of(browser, "#scheduled")
    connection.close()


def test_a_queues_page_lists_its_retries_to_cancel_or_fire(
        managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    """A queue with x-delayed-retry-* lists the messages waiting out their
    delay, by message_id; Cancel dead-letters one, Fire now brings one back."""
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("dead", durable=True)
    channel.queue_declare("jobs", durable=True, arguments={
        "x-delayed-retry-min": 3_600_000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    channel.confirm_delivery()
    for n in range(3):
        channel.basic_publish("", "jobs", b"job %d" % n, pika.BasicProperties(delivery_mode=2, message_id=f"job-{n}"))
    for _ in range(3):
        method, _, _ = channel.basic_get("jobs")
        channel.basic_nack(method.delivery_tag, requeue=True)
    log_in(browser, managed, page="queue/%2F/jobs")
    rows = "#retries tbody tr"
    first = _cancel_first_fire_second(browser, "retries", "3 waiting")
    assert "job-0" in first and "job 0" in first
    assert channel.basic_get("dead", auto_ack=True)[2] == b"job 0"  # dead-lettered
    assert _arrival(channel, "jobs")[2] == b"job 1"
    browser.refresh()
    wait(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, rows)) == 1)
    assert text_of(browser, "#retries-summary") == "1 waiting" and "job-2" in text_of(browser, "#retries")
    connection.close()
