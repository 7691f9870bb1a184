#!/usr/bin/env python3

r"""
The README's and the docs' screenshots, made from the demo's real run with
the commands a user types: ``captum-tracin-we demo`` (its default, the
pretrained MiniLM on 1,000 Rotten Tomatoes sentences), then its
``report.html`` in headless Chromium, then ``captum-tracin-we explore`` on the
same run and a typed text in headless Chromium.

Writes docs/_static/report.png and docs/_static/explorer.png. The demo's
output goes to ``--out`` (default: a folder outside the working tree, so that
its run does not land in git). The explorer binds 127.0.0.1 only and is
stopped at the end.

Run:  python -m benchmarks.screenshots [--out /tmp/tracin_we_demo]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

STATIC = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "docs", "_static"
)
TEXT = "a gripping, funny film with a mindless plot"


def chromium_shot(url: str, path: str, size: str, budget_ms: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("Chromium is not installed (apt-get install chromium).")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                f"--screenshot={os.path.abspath(path)}", f"--window-size={size}", url,
            ],
            capture_output=True, timeout=180, check=True,
        )  # fmt: skip
    print(f"Wrote {os.path.abspath(path)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"The explorer stopped (exit code {server.returncode}).")
        try:
            urllib.request.urlopen(url + "api/info", timeout=5).read()
            return
        except OSError:
            time.sleep(2)
    sys.exit("The explorer did not answer in time.")


def top_pair(url: str) -> int:
    request = urllib.request.Request(
        url + "api/query",
        data=json.dumps({"text": TEXT, "k": 1}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.load(answer)["methods"][0]["proponents"][0]["index"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=os.path.join(tempfile.gettempdir(), "tracin_we_demo")
    )
    args = parser.parse_args()
    cli = [sys.executable, "-m", "captum_tracin_we._cli"]
    subprocess.run(cli + ["demo", "--out", args.out], check=True)
    report = os.path.join(args.out, "report.html")
    shot = os.path.join(STATIC, "report.png")
    chromium_shot("file://" + os.path.abspath(report), shot, "1280,1500", 5000)
    port = free_port()
    server = subprocess.Popen(
        cli + ["explore", "--model", os.path.join(args.out, "run"),
               "--train", os.path.join(args.out, "train.csv"),
               "--index", os.path.join(args.out, "index"), "--max-length", "64",
               "--host", "127.0.0.1", "--port", str(port), "--no-progress"],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, server)
        pair = top_pair(url)
        fragment = urllib.parse.urlencode(
            {"view": "query", "text": TEXT, "k": 5, "pair": pair}
        )
        chromium_shot(f"{url}#{fragment}", os.path.join(STATIC, "explorer.png"),
                      "1280,1100", 30000)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
