"""The admin dashboard in headless Chromium (Debian's chromium and chromium-driver,
driven by selenium): it opens with the token, shows the sites, a site added by
POST /load, a chart that moves after traffic, an upstream whose health checks fail
as down, and no console errors.  A screenshot is left in the test's directory."""

from __future__ import annotations

import http.client
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .helpers import refused_port
from .test_admin import TOKEN, admin_porch, admin_request, get, site  # noqa: F401 (a fixture)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(30)
    driver.set_window_size(1200, 1800)  # the whole page in the screenshot
    yield driver
    driver.quit()


def text_of(driver, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text


def test_dashboard(admin_porch, upstream, browser, tmp_path):
    up = upstream()
    dead = f"http://127.0.0.1:{refused_port()}"
    health = 'health = { path = "/", interval = "300ms", timeout = "200ms", fall = 1, rise = 1 }'
    p = admin_porch(site("shop.test", f'"{up.url}"')
                    + site("pool.test", f'["{up.url}", "{dead}"]', health))
    wait = WebDriverWait(browser, 20, poll_frequency=0.2)
    browser.get(f"http://127.0.0.1:{p.admin_port}/?token={TOKEN}")
    assert browser.current_url == f"http://127.0.0.1:{p.admin_port}/"  # the token left the URL
    wait.until(lambda d: "shop.test" in text_of(d, "#sites"))
    assert "pool.test" in text_of(browser, "#sites")
    # the target whose checks fail is shown down; the other up
    wait.until(lambda d: any(dead in row.text and "down" in row.text
                             for row in d.find_elements(By.CSS_SELECTOR, "#upstreams tbody tr")))
    rows = {row.find_element(By.CSS_SELECTOR, "td").text: row.text
            for row in browser.find_elements(By.CSS_SELECTOR, "#upstreams tbody tr")}
    assert " up " in f" {rows[up.url]} " and "down" in rows[dead]
    # traffic: the total and the chart move
    for i in range(40):
        assert get(p.port, "shop.test", f"/{i}")[0] == 200
    wait.until(lambda d: int(text_of(d, "#requests-total")) >= 40)
    chart = browser.find_element(By.ID, "chart")
    wait.until(lambda d: float(chart.get_attribute("data-peak")) > 0)
    assert int(chart.get_attribute("data-points")) >= 1
    # a site added through the API appears without reloading the page
    config = p.config_path.read_text() + site("new.test", f'"{up.url}"')
    status, body, _ = admin_request(p, "POST", "/load", config.encode(), headers={"Content-Type": "application/toml"})
    assert status == 200, body
    wait.until(lambda d: "new.test" in text_of(d, "#sites"))
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_dashboard_needs_the_token(admin_porch, upstream, browser):
    up = upstream()
    p = admin_porch(site("shop.test", f'"{up.url}"'))
    browser.get(f"http://127.0.0.1:{p.admin_port}/")
    assert "Bearer" in browser.find_element(By.TAG_NAME, "body").text  # the 401's words, no page
    conn = http.client.HTTPConnection("127.0.0.1", p.admin_port, timeout=10)
    conn.request("GET", "/?token=wrong-token-0123456789")
    assert conn.getresponse().status == 401
