#!/usr/bin/env bash
# The README's test command: installs what the tests need that NuGet does not bring (Debian's headless Chromium, for
# the unit dashboard's browser test), runs the suite, then packs the libraries users reference from their own tests
# and runs samples/RegressionChecks (such a user's project) against them from the local feed.
set -euo pipefail
cd "$(dirname "$0")"

# Browsers that download themselves (Playwright, Puppeteer) cannot reach their hosts here; Debian's package can.
if ! command -v chromium >/dev/null; then
  echo "test.sh: installing Debian's chromium (the dashboard test opens the page in a real browser)"
  if [ "$(id -u)" = 0 ]; then as_root=(); elif sudo -n true 2>/dev/null; then as_root=(sudo -n); else
    echo "error: the tests need Debian's 'chromium' package and this user can neither install it (not root, no passwordless sudo): run 'apt-get install chromium' as root, then bash test.sh again." >&2
    exit 2
  fi
  if ! { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "error: 'apt-get install chromium' failed (see above): install Debian's 'chromium' package, then bash test.sh again." >&2
    exit 2
  fi
fi

dotnet test Pipeline.sln "$@"

# The packages users reference (ReluSparsity.Core, .Analysis, .NUnit), packed and consumed as a user's project would,
# so a broken package fails here too.
for project in Core Analysis Checks; do dotnet pack "src/$project/$project.csproj" -c Release; done
rm -rf samples/RegressionChecks/.packages
dotnet test samples/RegressionChecks/RegressionChecks.csproj
