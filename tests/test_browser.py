"""The course in a real browser (issue 17): JupyterLab started from a fresh
copy of the course (no grading/ folder yet) on 127.0.0.1, driven with
headless Chromium through Selenium as a student and an instructor would:
lab 00 opens with its markdown and math rendered, its first cells run and
show their output (a figure included), nbgrader's Validate button answers,
and Formgrader lists every lab. Also: `effml report`'s page renders its
pictures.

Chromium and its driver are Debian's `chromium` and `chromium-driver`,
installed by `make venv` (apt) as bubblewrap is; without them these tests
FAIL (CI runs `make venv` first). Screenshots of a failing step are kept
under build/test-artifacts/ (or $EFFML_TEST_ARTIFACTS)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from autograder.course import REPO_ROOT, Course

LAB = "lab00_basics"
BIN = Path(sys.executable).parent
ARTIFACTS = Path(os.environ.get("EFFML_TEST_ARTIFACTS", REPO_ROOT / "build" / "test-artifacts"))
# What a fresh clone holds that JupyterLab and nbgrader read (helpers and autograder come from the venv).
COURSE_FILES = ("nbgrader_config.py", "pyproject.toml", "solutions", "labs")


def _chromium() -> tuple[str, str]:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("headless Chromium is missing (chromium: %s, chromedriver: %s): run `make venv`, which installs "
                    "Debian's `chromium` and `chromium-driver` with apt (as root), or install them yourself"
                    % (browser, driver), pytrace=False)
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is missing: `make venv` installs it (pyproject.toml)", pytrace=False)
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab on a fresh copy of the course: token-less, 127.0.0.1 only,
    its own Jupyter config and workspace folders; stopped at the end."""
    base = tmp_path_factory.mktemp("jupyterlab")
    course = base / "course"
    course.mkdir()
    for name in COURSE_FILES:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, course / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else:
            shutil.copy2(src, course / name)
    assert not (course / "grading").exists()
    news = base / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast over the page
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFFML_") or k in ("EFFML_QUICK", "EFFML_SEED")}
    env.update(EFFML_QUICK="1", EFFML_EXCHANGE=str(base / "exchange"), JUPYTER_CONFIG_DIR=str(base / "config"),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(base / "settings"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
               PATH=f"{BIN}:{env.get('PATH', '')}")
    log = open(base / "jupyterlab.log", "w")
    cmd = [str(BIN / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={course}",
           "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start: " + (base / "jupyterlab.log").read_text()[-3000:])
            time.sleep(1)
        yield {"url": url, "course": course, "log": base / "jupyterlab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / "jupyterlab.log", ARTIFACTS / "jupyterlab.log")


@contextlib.contextmanager
def _step(driver, name: str):
    """A failing step leaves a screenshot (and the page's HTML) as test artifacts."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
            (ARTIFACTS / f"{name}.html").write_text(driver.page_source)
        raise


def _wait(driver, timeout, condition, message):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        raise AssertionError(f"{message} (waited {timeout} s)") from None


def _css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def test_lab00_runs_and_validates_in_jupyterlab(jupyterlab, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    with _step(d, "lab00_open"):
        d.get(f"{jupyterlab['url']}/lab/tree/labs/{LAB}/{LAB}.ipynb")
        _wait(d, 120, lambda d: len(_css(d, ".jp-Notebook .jp-Cell")) > 10, "lab 00's cells did not appear")
        _wait(d, 60, lambda d: _css(d, "mjx-container"), "no math was rendered (MathJax)")
        assert "Lab 00" in _css(d, ".jp-Notebook .jp-MarkdownCell h1")[0].text
        _wait(d, 120, lambda d: _css(d, ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']"),
              "the kernel did not become idle")
    with _step(d, "lab00_run_cells"):
        cells = _css(d, ".jp-Notebook .jp-Cell")
        cells[0].click()  # the title (a rendered markdown cell): command mode
        for _ in range(5):  # title, parameters, set-up, a heading, the baseline training with its figure
            ActionChains(d).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
            time.sleep(0.3)
        train = _css(d, ".jp-Notebook .jp-Cell")[4]
        _wait(d, 240, lambda d: train.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img"),
              "the training cell showed no figure")
        text = train.find_element(By.CSS_SELECTOR, ".jp-OutputArea").text
        assert "test accuracy after 2 epochs" in text, text  # QUICK mode: 2 epochs
        img = train.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output img")
        assert d.execute_script("return arguments[0].naturalWidth", img) > 0
        assert not _css(d, ".jp-Notebook .jp-Cell:nth-child(-n+5) .jp-OutputArea-output[data-mime-type="
                           "'application/vnd.jupyter.stderr'] .jp-RenderedText pre.ansi-red-fg")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(ARTIFACTS / "jupyterlab_lab00.png"))
    with _step(d, "lab00_validate"):
        buttons = d.find_elements(By.XPATH, "//*[contains(@class,'jp-NotebookPanel-toolbar')]"
                                            "//*[self::button or self::jp-button][normalize-space(.)='Validate']")
        assert buttons, "nbgrader's Validate button is not in the notebook toolbar"
        buttons[0].click()
        # The release is blank: validation runs every cell (QUICK, the lab's limits) and lists the failures.
        dialog = _wait(d, 300, lambda d: [x for x in _css(d, ".jp-Dialog") if "Valid" in x.text
                                          and "Validating" not in x.text], "Validate gave no result")[0]
        text = dialog.text
        d.save_screenshot(str(ARTIFACTS / "jupyterlab_validate.png"))
        assert "Task 1.1" in text or "NotImplementedError" in text, text
        assert "CellTimeoutError" not in text and "timeout" not in text.lower(), text


def test_formgrader_lists_every_lab(jupyterlab, browser):
    d = browser
    with _step(d, "formgrader"):
        d.get(f"{jupyterlab['url']}/formgrader")
        labs = Course().labs()
        _wait(d, 120, lambda d: all(lab in d.find_element("tag name", "body").text for lab in labs),
              "Formgrader did not list every lab: " + ", ".join(labs))
        assert "Loading" not in d.find_element("tag name", "body").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(ARTIFACTS / "formgrader.png"))
    assert (jupyterlab["course"] / "grading" / "gradebook.db").is_file()  # made on the fly by nbgrader_config.py


def test_the_students_assignment_list_reaches_the_exchange(jupyterlab, browser):
    """What the Assignment List panel asks the server (it showed "Error
    fetching courses!" and "exchange directory does not exist")."""
    import json

    d = browser
    with _step(d, "assignment_list"):
        for path in ("/courses", "/assignments?course_id=effml"):
            d.get(jupyterlab["url"] + path)
            answer = json.loads(d.find_element("tag name", "body").text)
            assert answer["success"] is True, (path, answer)


def test_the_instructors_report_shows_its_pictures(browser, tmp_path):
    """`effml report`'s page (written from a small gradebook; no grading
    here): every picture loads (naturalWidth > 0) under its own CSP."""
    from test_report import make_gradebook  # noqa: PLC0415 - the shared fixture builder

    course = make_gradebook(tmp_path / "grading")
    from autograder.lab_report import write_report

    page = write_report(course, LAB)
    d = browser
    with _step(d, "report"):
        d.get(page.as_uri())
        imgs = _wait(d, 30, lambda d: len(_css(d, "img")) == 4 and _css(d, "img"), "the report has no pictures")
        _wait(d, 30, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
                                   for i in imgs), "a picture of the report did not render")
        text = d.find_element("tag name", "body").text
        assert "Needs attention" in text and "dave_timeout" in text and "grace_flagged" in text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(ARTIFACTS / "report.png"))
