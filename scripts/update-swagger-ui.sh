#!/usr/bin/env bash
# Replaces the Swagger UI files that /docs serves (assets/swagger-ui/, embedded in the
# binary at build time) with those of the npm package swagger-ui-dist at VERSION:
#
#   scripts/update-swagger-ui.sh 5.35.0
#
# Needs npm and the npm registry; the build and the tests never do. It checks the
# tarball against the registry's integrity hash, copies the few files /docs needs with
# their licence, and records the version and each file's SHA-256 (SHA256SUMS), which
# scripts/test.sh verifies. Review the diff, run scripts/test.sh (the headless-Chromium
# check shows whether the page still renders offline), and commit.
set -euo pipefail
version=${1:?usage: scripts/update-swagger-ui.sh VERSION (see: npm view swagger-ui-dist version)}
cd "$(dirname "$0")/.."
dest=assets/swagger-ui
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

integrity=$(npm view "swagger-ui-dist@$version" dist.integrity)
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null)
tarball=$work/swagger-ui-dist-$version.tgz
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
  echo "integrity mismatch: registry says $integrity, tarball is $got" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"

files=(swagger-ui-bundle.js swagger-ui.css favicon-32x32.png LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt)
for f in "${files[@]}"; do
  cp "$work/package/$f" "$dest/$f"
done
{
  echo "swagger-ui-dist $version"
  echo "integrity $integrity"
} >"$dest/VERSION"
(cd "$dest" && sha256sum "${files[@]}" >SHA256SUMS)
echo "assets/swagger-ui now holds swagger-ui-dist $version"
