#!/usr/bin/env bash
# Build FerretDB 1.x from the Go module proxy and cache the binary.
# Prints the path of the binary on stdout (last line); progress goes to stderr.
#
# Why not `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`:
#  * the proxy answers 403 for the module's version list (needed by `go install pkg@version`
#    for its deprecation/retraction check), so that command fails here;
#  * a build through a throw-away module (`go get` + `go install`) compiles, but the binary
#    panics at start-up: FerretDB's build/version package requires a generated
#    build/version/version.txt that is not part of the published module zip.
# So we download exactly that module version (`go mod download`, no version list needed),
# copy its source, write build/version/version.txt and build cmd/ferretdb from the copy.
set -euo pipefail

VERSION="${FERRETDB_VERSION:-v1.24.2}"
MODULE="github.com/FerretDB/FerretDB"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/notes_pipeline"
BIN="$CACHE_DIR/ferretdb-$VERSION"

log() { echo "build_ferretdb: $*" >&2; }

if [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; then
    log "cached: $BIN"
    echo "$BIN"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    for d in /usr/local/go/bin "$HOME/go/bin"; do
        [[ -x "$d/go" ]] && PATH="$d:$PATH"
    done
fi
command -v go >/dev/null 2>&1 || { log "Go toolchain not found on PATH"; exit 1; }

mkdir -p "$CACHE_DIR"
work="$(mktemp -d "${TMPDIR:-/tmp}/ferretdb-build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

log "downloading $MODULE@$VERSION from the Go module proxy"
# Run outside any module so the download does not touch a go.mod.
json="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION")"
src_dir="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)"
commit="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)",\{0,1\}$/\1/p' | head -n1)"
[[ -n "$src_dir" && -d "$src_dir" ]] || { log "go mod download gave no source dir"; exit 1; }

cp -R "$src_dir" "$work/src"
chmod -R u+w "$work/src"
echo "$VERSION" >"$work/src/build/version/version.txt"
[[ -n "$commit" ]] && echo "$commit" >"$work/src/build/version/commit.txt"
echo "notes_pipeline-source" >"$work/src/build/version/package.txt"

log "compiling cmd/ferretdb (a few minutes on a cold cache)"
(
    cd "$work/src"
    CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" \
        go build -trimpath -o "$work/ferretdb" ./cmd/ferretdb
)
"$work/ferretdb" --version >&2
mv -f "$work/ferretdb" "$BIN"
log "built: $BIN"
echo "$BIN"
