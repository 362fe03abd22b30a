"""Headless Chromium for browser tests: Debian's chromium and chromedriver, never downloaded.

Selenium is given both paths, so selenium-manager never runs (it would fetch a driver from the
network). Without the browser the tests skip locally and fail in CI (CI=true), where
scripts/bootstrap installs it. Screenshots are checked with a tiny PNG decoder (numpy), not
Pillow.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARGUMENTS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Containers often have a tiny /dev/shm, where Chromium's renderers would crash.
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def require_chromium() -> None:
    """Skip (locally) or fail (CI=true) when Debian's chromium or chromedriver is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        reason = (
            f"headless Chromium is not installed ({', '.join(missing)} missing); "
            "scripts/test installs Debian's chromium and chromium-driver when run as root"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@contextmanager
def chromium(tmp_path: Path, *, width: int = 1280, height: int = 1000) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile under tmp_path, quit on exit."""
    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: WebDriver) -> list[str]:
    """The page's console messages of level SEVERE since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def decode_png(data: bytes) -> np.ndarray:
    """Pixels (height, width, channels) of an 8-bit RGB/RGBA PNG, as Chromium writes them."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    position, chunks, header = 8, [], b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or interlace or colour_type not in (2, 6):
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}")
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8)
    rows = raw.reshape(height, stride + 1)
    pixels = np.zeros((height, stride), dtype=np.uint8)
    above = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        line = rows[y, 1:]
        match rows[y, 0]:
            case 0:
                current = line.copy()
            case 1:  # Sub: a running sum per channel along the row
                current = np.cumsum(line.reshape(width, channels), axis=0, dtype=np.uint8)
                current = current.reshape(stride)
            case 2:  # Up
                current = line + above
            case 3 | 4 as method:  # Average and Paeth depend on the byte just decoded
                current = _unfilter_sequential(int(method), line, above, channels)
            case other:
                raise ValueError(f"bad PNG filter {other}")
        pixels[y] = current
        above = pixels[y]
    return pixels.reshape(height, width, channels)


def _unfilter_sequential(
    method: int, line: np.ndarray, above: np.ndarray, channels: int
) -> np.ndarray:
    out = bytearray(len(line))
    up = above.tobytes()
    for i, value in enumerate(line.tobytes()):
        left = out[i - channels] if i >= channels else 0
        if method == 3:
            out[i] = (value + (left + up[i]) // 2) & 0xFF
            continue
        corner = up[i - channels] if i >= channels else 0
        estimate = left + up[i] - corner
        to_left, to_up, to_corner = (
            abs(estimate - left),
            abs(estimate - up[i]),
            abs(estimate - corner),
        )
        if to_left <= to_up and to_left <= to_corner:
            predicted = left
        elif to_up <= to_corner:
            predicted = up[i]
        else:
            predicted = corner
        out[i] = (value + predicted) & 0xFF
    return np.frombuffer(bytes(out), dtype=np.uint8)


def assert_not_blank(png: bytes, *, min_colours: int = 16, max_background: float = 0.97) -> None:
    """The screenshot shows something: many colours, and not one colour nearly everywhere."""
    pixels = decode_png(png)[:, :, :3].reshape(-1, 3).astype(np.uint32)
    packed = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    colours, counts = np.unique(packed, return_counts=True)
    background = counts.max() / counts.sum()
    assert len(colours) >= min_colours, f"only {len(colours)} colours: a blank screenshot?"
    assert background <= max_background, f"{background:.1%} of the screenshot is one colour"
