"""The page in a real browser: Debian's chromium, driven through /usr/bin/chromedriver, against
`nextwatch serve` (gunicorn, 2 workers) on the test Redis. Nothing is downloaded, everything
stays on 127.0.0.1; a browser or server that will not start fails the test."""

import sys

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import DEFAULT_NEIGHBOURS, TITLES, publish_test_model
from nextwatch.service.access import issue_key
from nextwatch.datasets.demo_dataset import DemoConfig, generate_catalog
from nextwatch.local_processes.redis_server import free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1440,1000",
    # Any host name but the loopback address fails to resolve: the page cannot reach out.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture
def catalog(store):
    """C000..C1099 with demo names and genres, and the small known model over them."""
    titles = generate_catalog(DemoConfig(titles=len(TITLES)))
    assert [t["content_id"] for t in titles] == TITLES
    store.catalog.save_info(titles)
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    return {t["content_id"]: t for t in titles}


@pytest.fixture
def api(settings, store):
    """`nextwatch serve` with 2 workers on a free loopback port, against the test Redis."""
    port = free_port()
    supervisor = Supervisor()
    env = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix,
           "NEXTWATCH_HOST": "127.0.0.1", "NEXTWATCH_API_KEYS_REFRESH": "0.05"}
    try:
        supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port", str(port), "--workers", "2"],
                         env, ready=http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        supervisor.stop_all()


@pytest.fixture
def browser(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager never downloads
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=15):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def text(driver, element_id) -> str:
    return driver.find_element(By.ID, element_id).text


def count(driver, element_id) -> int:
    return int(text(driver, element_id).replace(",", ""))


def open_page(driver, api):
    driver.get(f"{api}/")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == 24)
    wait(driver, lambda d: text(d, "stat-hits") not in ("", "–"))


def choose_user(driver, user):
    field = driver.find_element(By.ID, "user-input")
    field.clear()
    field.send_keys(user)
    driver.find_element(By.ID, "user-apply").click()
    wait(driver, lambda d: d.find_element(By.ID, "next-title").get_attribute("data-content-id")
         and text(d, "next-user") == f"for {user}")


def card(driver, content_id):
    return driver.find_element(By.CSS_SELECTOR, f'#grid .card[data-content-id="{content_id}"]')


def filter_for(driver, words, content_id):
    field = driver.find_element(By.ID, "filter-q")
    field.clear()
    field.send_keys(words)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'#grid .card[data-content-id="{content_id}"]'))


def test_watching_from_the_page_shows_what_the_api_serves(api, browser, catalog, tmp_path):
    open_page(browser, api)
    first = browser.find_element(By.CSS_SELECTOR, "#grid .card")
    assert catalog["C000"]["name"] in first.text and catalog["C000"]["genres"][0] in first.text
    hits, watches = count(browser, "stat-hits"), count(browser, "stat-watches")

    choose_user(browser, "U777")  # no history yet: the popular fallback
    shown = browser.find_element(By.ID, "next-title").get_attribute("data-content-id")
    assert shown == requests.get(f"{api}/recommend/U777", timeout=5).json()["recommendation"] == "C000"
    assert "fallback" in text(browser, "next-source")

    watched = catalog["C1010"]
    filter_for(browser, watched["name"], "C1010")
    card(browser, "C1010").click()
    wait(browser, lambda d: f"because you watched {watched['name']}" in text(d, "next-reason"))

    served = requests.get(f"{api}/recommend/U777?k=10", timeout=5).json()
    shown = browser.find_element(By.ID, "next-title").get_attribute("data-content-id")
    assert shown == served["recommendation"] == "C1045"  # the strongest neighbour of C1010
    assert text(browser, "next-name") == catalog["C1045"]["name"]
    top = [item.get_attribute("data-content-id") for item in browser.find_elements(By.CSS_SELECTOR, "#topk li")]
    assert top == served["recommendations"]
    assert catalog[top[1]]["name"] in browser.find_element(By.ID, "topk").text
    # Each title shows the server's reason (GET /recommend?explain=true), the first one too.
    explained = requests.get(f"{api}/recommend/U777?k=10&explain=true", timeout=5).json()["explanations"]
    reasons = [li.find_element(By.CSS_SELECTOR, ".why").text for li in browser.find_elements(By.CSS_SELECTOR, "#topk li")]
    assert reasons == [entry["text"] for entry in explained] and reasons[0] == f"because you watched {watched['name']}"
    assert text(browser, "next-reason") == explained[0]["text"]
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#history li")] == [watched["name"]]

    # The counters moved, and they are the server's (summed over both workers).
    wait(browser, lambda d: count(d, "stat-watches") == watches + 1 and count(d, "stat-hits") > hits)
    stats = requests.get(f"{api}/stats", timeout=5).json()
    wait(browser, lambda d: count(d, "stat-hits") == stats["cache_hits"], timeout=5)
    assert text(browser, "stat-hit-rate").endswith("%")
    assert browser.find_element(By.ID, "error").is_displayed() is False
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_genre_filter_and_pages(api, browser, catalog):
    open_page(browser, api)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filter-genre option")) > 1)
    Select(browser.find_element(By.ID, "filter-genre")).select_by_value("Drama")
    dramas = [t for t in catalog.values() if "Drama" in t["genres"]]
    wait(browser, lambda d: text(d, "catalog-count") == f"{len(dramas)} titles")
    shown = [c.get_attribute("data-content-id") for c in browser.find_elements(By.CSS_SELECTOR, "#grid .card")]
    assert shown == [t["content_id"] for t in dramas[:24]]
    browser.find_element(By.ID, "page-next").click()
    wait(browser, lambda d: text(d, "page-info") == f"page 2 of {-(-len(dramas) // 24)}")
    assert card(browser, dramas[24]["content_id"])


def test_with_api_keys_the_page_says_401_until_a_key_is_entered(api, browser, store, catalog, tmp_path):
    key = issue_key(store, "page", "write")
    open_page(browser, api)
    choose_user(browser, "U778")
    card(browser, "C005").click()
    wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "401" in text(browser, "error-text") and "API key" in text(browser, "error-text")
    assert store.events.length() == 0

    browser.find_element(By.ID, "api-key").send_keys(key)
    card(browser, "C005").click()
    wait(browser, lambda d: "because you watched" in text(d, "next-reason"))
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert browser.find_element(By.ID, "next-title").get_attribute("data-content-id") == "C006"
    assert browser.execute_script("return sessionStorage.getItem('nextwatch.apiKey')") == key
    assert store.events.length() == 1

    browser.find_element(By.ID, "api-key").clear()
    browser.find_element(By.ID, "api-key").send_keys("not-a-key")
    card(browser, "C007").click()
    wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "not accepted" in text(browser, "error-text")
    browser.save_screenshot(str(tmp_path / "page-401.png"))
