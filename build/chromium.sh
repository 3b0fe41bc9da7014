#!/usr/bin/env bash
# Debian's headless Chromium for the unit dashboard's browser test, installed when missing (the Cake Test target runs
# this first): as root, or through passwordless sudo; otherwise one line naming the package, exit 2.
set -euo pipefail
# Browsers that download themselves (Playwright, Puppeteer) cannot reach their hosts here; Debian's package can.
# The same names, looked up on PATH, as the dashboard test (tests/Pipeline.Tests/UnitExamplesTests.cs).
browser() { command -v chromium || command -v chromium-browser || command -v google-chrome; }
if ! browser >/dev/null; then
  echo "build/chromium.sh: installing Debian's chromium (the dashboard test opens the page in a real browser)"
  if [ "$(id -u)" = 0 ]; then as_root=(); elif sudo -n true 2>/dev/null; then as_root=(sudo -n); else
    echo "error: the tests need Debian's 'chromium' package and this user can neither install it (not root, no passwordless sudo): run 'apt-get install chromium' as root, then run the tests again." >&2
    exit 2
  fi
  if ! { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "error: 'apt-get install chromium' failed (see above): install Debian's 'chromium' package, then run the tests again." >&2
    exit 2
  fi
fi
# Installed is not enough: it must start (a broken install fails here, in one line, not inside the test).
if ! "$(browser)" --headless --no-sandbox --version >/dev/null 2>&1; then
  echo "error: $(browser) is installed but does not start (try '$(browser) --headless --no-sandbox --version'): reinstall Debian's 'chromium' package, then run the tests again." >&2
  exit 2
fi
