"""The dashboard in headless Chromium (Debian's chromium and chromium-driver,
which .ci/run installs), driven by selenium against a real server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

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
                 "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait(driver: webdriver.Chrome, condition: object, timeout: float = 15) -> object:
    return WebDriverWait(driver, timeout).until(condition)  # type: ignore[arg-type]


def log_in(driver: webdriver.Chrome, server: ManagedServerThread, user: str = "guest", password: str = "guest") -> None:
    driver.get(f"http://127.0.0.1:{server.management_port}/#/login")
    wait(driver, expected_conditions.presence_of_element_located((By.ID, "username")))
    for field, value in (("username", user), ("password", password)):
        driver.find_element(By.ID, field).clear()
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()


def text_of(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_log_in_and_see_a_queue_depth_change(managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    channel.queue_declare("watched")
    log_in(browser, managed)
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "who"), "guest"))
    if SCREENSHOTS:
        channel.basic_publish("", "watched", b"x")
        wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "total-messages"), "1"))
        browser.save_screenshot(str(Path(SCREENSHOTS) / "dashboard-overview.png"))
        channel.queue_purge("watched")
    browser.get(f"http://127.0.0.1:{managed.management_port}/#/queues")
    row = "#queues tr[data-name='watched']"
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, row)))
    assert text_of(browser, f"{row} td:nth-child(3)") == "0"
    for n in range(3):
        channel.basic_publish("", "watched", b"m%d" % n)
    # The page polls every 5 s: the depth changes without a reload.
    wait(browser, expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, f"{row} td:nth-child(3)"), "3"))
    browser.find_element(By.ID, "filter").send_keys("nothing-like-it")
    assert not browser.find_elements(By.CSS_SELECTOR, row)
    connection.close()


def test_redrive_a_dead_letter_queue_from_its_page(managed: ManagedServerThread, browser: webdriver.Chrome) -> None:
    connection = managed.connect()
    channel = connection.channel()
    dead_letter_setup(channel, "work", "work.dlq")
    for n in range(4):
        channel.basic_publish("", "work", b"job %d" % n)
    for _ in range(4):
        method, _, _ = channel.basic_get("work")
        channel.basic_reject(method.delivery_tag, requeue=False)
    assert channel.queue_declare("work.dlq", passive=True).method.message_count == 4

    log_in(browser, managed)
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "who"), "guest"))
    browser.get(f"http://127.0.0.1:{managed.management_port}/#/queue/%2F/work.dlq")
    wait(browser, expected_conditions.element_to_be_clickable((By.ID, "get"))).click()  # type: ignore[union-attr]
    wait(browser, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".message table")))
    death = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, ".message table tbody tr td")][:3]
    assert death == ["rejected", "work", "1"]  # x-death: reason, queue, count
    if SCREENSHOTS:
        browser.save_screenshot(str(Path(SCREENSHOTS) / "dashboard-queue.png"))
    browser.find_element(By.ID, "redrive").click()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "redrive-result"), "Moved 4 message(s)."))
    assert channel.queue_declare("work", passive=True).method.message_count == 4
    assert channel.queue_declare("work.dlq", passive=True).method.message_count == 0
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
    wait(browser, expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#connections button.close"))).click()  # type: ignore[union-attr]
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(50):
            victim.process_data_events(time_limit=0.1)
    assert closed.value.reply_text == "CONNECTION_FORCED - Closed from the amqlite dashboard"
