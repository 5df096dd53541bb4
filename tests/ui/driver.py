"""Drives headless Chromium for tests/dashboard.rs, one command per line.

Reads JSON commands on stdin and answers one JSON line each on stdout ({"ok": true, "value": ...} or
{"ok": false, "error": "..."}). The first line out says the chromedriver's PID. Uses Debian's
python3-selenium, chromium and chromium-driver; no download of any kind.
"""
import json
import os
import re
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    opts = Options()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1000",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--user-data-dir=" + os.environ["PROFILE_DIR"]]:
        opts.add_argument(arg)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")
    # port 0: chromedriver listens on a free port chosen for it.
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"), port=0)
    driver = webdriver.Chrome(service=service, options=opts)
    out({"ok": True, "value": {"chromedriver_pid": service.process.pid}})

    def find(css):
        return driver.find_element(By.CSS_SELECTOR, css)

    def wait(pred, timeout):
        deadline = time.time() + timeout
        last = None
        while True:
            try:
                v = pred()
                if v is not None and v is not False:
                    return v
            except Exception as e:  # not there yet
                last = e
            if time.time() >= deadline:
                raise TimeoutError("timed out" + (": " + str(last) if last else ""))
            time.sleep(0.05)

    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "quit":
                driver.quit()
                out({"ok": True, "value": None})
                return
            elif op == "get":
                driver.get(cmd["url"])
                v = None
            elif op == "url":
                v = driver.current_url
            elif op == "click":
                wait(lambda: find(cmd["css"]).is_displayed(), cmd.get("timeout", 10))
                find(cmd["css"]).click()
                v = None
            elif op == "type":
                e = wait(lambda: find(cmd["css"]), cmd.get("timeout", 10))
                e.clear()
                e.send_keys(cmd["text"])
                v = None
            elif op == "select":
                Select(find(cmd["css"])).select_by_visible_text(cmd["text"])
                v = None
            elif op == "text":
                v = find(cmd["css"]).text
            elif op == "wait_text":
                pattern = re.compile(cmd["pattern"])
                v = wait(lambda: (lambda t: t if pattern.search(t) else None)(find(cmd["css"]).text),
                         cmd.get("timeout", 10))
            elif op == "count":
                v = len(driver.find_elements(By.CSS_SELECTOR, cmd["css"]))
            elif op == "exec":
                v = driver.execute_script(cmd["js"], *cmd.get("args", []))
            elif op == "alert":
                try:
                    a = driver.switch_to.alert
                    v = a.text
                    a.dismiss()
                except NoAlertPresentException:
                    v = None
            elif op == "screenshot":
                driver.save_screenshot(cmd["path"])
                v = cmd["path"]
            elif op == "logs":
                v = [e.get("message", "") for e in driver.get_log("browser")]
            else:
                raise ValueError("unknown op " + op)
            out({"ok": True, "value": v})
        except Exception as e:
            out({"ok": False, "error": type(e).__name__ + ": " + str(e)})
    driver.quit()


if __name__ == "__main__":
    main()
