#!/usr/bin/env bash
# Guards the deploy path (docs/aws.md, "Deploying with SAM"): `sam build` of the shipped
# template.yaml must succeed and give bootstraps of the `lambda` profile's size, under
# 14 MB each (those of the plain release profile, about twice that, fail it).
#
#   scripts/sam-check.sh
#   scripts/sam-check.sh --install-tools   only install the tools (scripts/aws-local.sh uses it)
#
# Installs, once, a virtualenv with aws-sam-cli and cargo-lambda (it brings zig) into
# ${POSTBACK_TOOLS:-$HOME/.cache/postback-tools} (a marker file makes the next run a
# no-op), and the aarch64-unknown-linux-gnu Rust target if it is missing. A machine that
# cannot get that target checks an x86_64 build of the same template instead and says so
# (SAM_CHECK_ARCH=x86_64 forces that; the template itself stays arm64).
#
# Caching: SAM's rust-cargolambda builder builds in the source tree (it never copies it)
# and keeps an explicit CARGO_TARGET_DIR, so with the default
# $HOME/.cache/postback-target an unchanged tree rebuilds nothing. SAM's own output goes
# to $POSTBACK_TOOLS/sam-build/<checkout>/, not into the clone. SAM's `--cached` is not
# used: it hashes only each function's CodeUri (functions/<name>), not shared/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

SAM_CLI_VERSION="1.170.0"
CARGO_LAMBDA_VERSION="1.9.2"
MAX_BYTES=14000000 # 14 MB
# Logical id and cargo binary of each function in template.yaml.
FUNCTIONS=(ConfigApiFunction:config-api IngestFunction:ingest DispatchFunction:dispatch)

TOOLS="${POSTBACK_TOOLS:-$HOME/.cache/postback-tools}"
VENV="$TOOLS/venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postback-target}"
# One SAM build directory per checkout, so two clones never overwrite each other's.
WORK="$TOOLS/sam-build/$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"

die() {
    echo "sam-check: $*" >&2
    exit 1
}

start=$SECONDS

# --- tools ---------------------------------------------------------------------------
marker="$VENV/.installed-aws-sam-cli==$SAM_CLI_VERSION-cargo-lambda==$CARGO_LAMBDA_VERSION"
if [[ ! -f "$marker" || ! -x "$VENV/bin/sam" || ! -x "$VENV/bin/cargo-lambda" ]]; then
    command -v python3 >/dev/null || die "python3 is required (for the aws-sam-cli virtualenv)"
    echo "sam-check: installing aws-sam-cli==$SAM_CLI_VERSION and cargo-lambda==$CARGO_LAMBDA_VERSION into $VENV" >&2
    mkdir -p "$TOOLS"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "aws-sam-cli==$SAM_CLI_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION" >"$TOOLS/pip.log" 2>&1 ||
        { tail -n 20 "$TOOLS/pip.log" >&2; die "pip install failed (log: $TOOLS/pip.log)"; }
    rm -f "$VENV"/.installed-*
    touch "$marker"
fi
# sam finds cargo-lambda, and cargo-lambda finds zig (the ziglang package), on PATH.
export PATH="$VENV/bin:$PATH"
export SAM_CLI_TELEMETRY=0
[[ "${1:-}" != --install-tools ]] || exit 0

# --- the profile SAM builds with -------------------------------------------------------
# SAM always runs `cargo lambda build --release`, so functions/.cargo/config.toml gives the
# release profile the `lambda` profile's settings; they must not drift apart.
"$VENV/bin/python" - "$ROOT/Cargo.toml" "$ROOT/functions/.cargo/config.toml" <<'EOF' || exit 1
import sys, tomllib
manifest, config = (tomllib.load(open(p, "rb")) for p in sys.argv[1:3])
want = {k: v for k, v in manifest["profile"]["lambda"].items() if k != "inherits"}
got = config.get("profile", {}).get("release", {})
if want != got:
    sys.exit(f"sam-check: [profile.release] in functions/.cargo/config.toml ({got}) "
             f"differs from [profile.lambda] in Cargo.toml ({want}): make them equal")
EOF

# --- architecture ----------------------------------------------------------------------
arch="${SAM_CHECK_ARCH:-arm64}"
case "$arch" in
arm64 | x86_64) ;;
*) die "SAM_CHECK_ARCH must be arm64 or x86_64, not $arch" ;;
esac
if [[ "$arch" == arm64 ]] && ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    echo "sam-check: adding the aarch64-unknown-linux-gnu Rust target" >&2
    if ! timeout 300 rustup target add aarch64-unknown-linux-gnu >"$TOOLS/rustup.log" 2>&1; then
        tail -n 5 "$TOOLS/rustup.log" >&2
        echo "sam-check: WARNING: no aarch64-unknown-linux-gnu target on this machine; checking an" \
            "x86_64 build of the template instead (the deployed template stays arm64)" >&2
        arch=x86_64
    fi
fi

rm -rf "$WORK/build"
mkdir -p "$WORK"
template="$ROOT/template.yaml"
if [[ "$arch" == x86_64 ]]; then
    # Same template, x86_64 functions; --base-dir keeps CodeUri relative to the repository.
    template="$WORK/template-x86_64.yaml"
    sed 's/^\(    Architectures: \)\[arm64\]$/\1[x86_64]/' "$ROOT/template.yaml" >"$template"
    grep -q '^    Architectures: \[x86_64\]$' "$template" || die "could not switch $template to x86_64"
fi

# --- sam build -----------------------------------------------------------------------
echo "sam-check: sam build ($arch, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)..." >&2
build_start=$SECONDS
if ! (cd "$ROOT" && sam build --no-cached --template-file "$template" --base-dir "$ROOT" \
    --build-dir "$WORK/build" --cache-dir "$WORK/cache") >"$WORK/sam-build.log" 2>&1; then
    tail -n 40 "$WORK/sam-build.log" >&2
    die "sam build failed (log: $WORK/sam-build.log)"
fi
build_s=$((SECONDS - build_start))

# --- the bootstraps ------------------------------------------------------------------
case "$arch" in
arm64) want_machine=183 ;; # ELF e_machine EM_AARCH64
x86_64) want_machine=62 ;; # EM_X86_64
esac
failed=0
for entry in "${FUNCTIONS[@]}"; do
    id="${entry%%:*}" bin="${entry#*:}"
    bootstrap="$WORK/build/$id/bootstrap"
    [[ -f "$bootstrap" ]] || { echo "sam-check: $id: no bootstrap at $bootstrap" >&2; failed=1; continue; }
    size="$(stat -c %s "$bootstrap")"
    machine="$(od -An -t u2 -j 18 -N 2 "$bootstrap" | tr -d ' ')"
    verdict=ok
    if ((size >= MAX_BYTES)); then verdict="TOO BIG (limit $MAX_BYTES bytes)"; failed=1; fi
    if [[ "$machine" != "$want_machine" ]]; then verdict="WRONG ARCHITECTURE (ELF machine $machine)"; failed=1; fi
    printf 'sam-check: %-18s %-11s %9d bytes (%s MB, %s)  %s\n' "$id" "$bin" "$size" \
        "$(awk "BEGIN { printf \"%.2f\", $size / 1000000 }")" "$arch" "$verdict"
done
[[ "$arch" == arm64 ]] || echo "sam-check: NOTE: checked x86_64 bootstraps (no arm64 target here); the template deploys arm64"
((failed == 0)) || die "bootstraps not as expected (sam build log: $WORK/sam-build.log)"
echo "sam-check: ok ($arch; sam build ${build_s} s, total $((SECONDS - start)) s)"
