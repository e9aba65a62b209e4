#!/usr/bin/env bash
# Fuzzes netd's DNS query path (fuzz/fuzz_targets/dns_query.rs: hickory-server request parsing,
# netd's answer logic, response encoding) with cargo-fuzz and libFuzzer, for a bounded time.
#
# Works on the stable toolchain: cargo-fuzz passes nightly-only -Z flags to rustc, which stable
# accepts with RUSTC_BOOTSTRAP=1 (set here, for this build only).
# Installs cargo-fuzz (cargo install) if missing. Writes the seed corpus (a few valid queries:
# A, AAAA, PTR, with and without EDNS, and some the resolver must refuse) into
# fuzz/corpus/dns_query/seed-*; what libFuzzer adds there beside them is not committed.
# Crashes, timeouts and leaks go to fuzz/artifacts/dns_query/ (minimize one with
# `RUSTC_BOOTSTRAP=1 cargo fuzz tmin dns_query fuzz/artifacts/dns_query/crash-...` in fuzz/).
#
# Environment: SECONDS (or FUZZ_SECONDS) how long to fuzz (60); SANITIZER address|none|leak
# (address); JOBS parallel fuzzing processes (1); CARGO_TARGET_DIR if set, else fuzz/target;
# NETD_FUZZ_STRICT=1 also fails on the known hickory-server quirk the target skips (see
# fuzz/fuzz_targets/dns_query.rs).
# Extra arguments go to libFuzzer (e.g. -max_len=512).
set -euo pipefail

# bash counts seconds in SECONDS: it is the caller's only when it came from the environment
# (bash then keeps it exported; read it before it grows).
DUR=${FUZZ_SECONDS:-$(printenv SECONDS || true)}
DUR=${DUR:-60}
SANITIZER=${SANITIZER:-address}
JOBS=${JOBS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ=$ROOT/fuzz
CORPUS=$FUZZ/corpus/dns_query

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-dns.sh: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

# --- seeds -----------------------------------------------------------------------------------
# The harness (netd::dns::fuzzing::Harness) serves a container on network "a" knowing c1
# (10.0.0.2), task web.1 (10.0.0.3) of service web (VIP 10.0.0.100); no upstreams.
mkdir -p "$CORPUS"
hdr() { printf "\\x$1\\x$2\\x$3\\x$4\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x$5"; } # id, flags, arcount
opt() { printf '\x00\x00\x29\x04\xd0\x00\x00'"$1"'\x00\x00'; }            # OPT, 1232 bytes, flags
seed() { local f="$CORPUS/seed-$1"; shift; [ -f "$f" ] || "$@" >"$f"; }
seed a-c1 eval 'hdr 12 34 01 00 00; printf "\x02c1\x00\x00\x01\x00\x01"'
seed a-C1-fqdn-edns eval 'hdr 12 35 01 20 01; printf "\x02C1\x00\x00\x01\x00\x01"; opt "\x00\x00"'
seed aaaa-web eval 'hdr 12 36 01 00 00; printf "\x03web\x00\x00\x1c\x00\x01"'
seed a-web-1-a-edns-do eval 'hdr 12 37 01 00 01; printf "\x03web\x011\x01a\x00\x00\x01\x00\x01"; opt "\x80\x00"'
seed a-tasks-web eval 'hdr 12 38 01 00 00; printf "\x05tasks\x03web\x00\x00\x01\x00\x01"'
seed ptr-10-0-0-2 eval 'hdr 12 39 01 00 00; printf "\x012\x010\x010\x0210\x07in-addr\x04arpa\x00\x00\x0c\x00\x01"'
seed ptr-vip-edns eval 'hdr 12 3a 01 00 01; printf "\x03100\x010\x010\x0210\x07in-addr\x04arpa\x00\x00\x0c\x00\x01"; opt "\x00\x00"'
seed any-web eval 'hdr 12 3b 01 00 00; printf "\x03web\x00\x00\xff\x00\x01"'
seed mx-unknown-edns eval 'hdr 12 3c 01 00 01; printf "\x07example\x03com\x00\x00\x0f\x00\x01"; opt "\x00\x00"'
seed txt-chaos eval 'hdr 12 3d 01 00 00; printf "\x07version\x04bind\x00\x00\x10\x00\x03"'
seed axfr eval 'hdr 12 3e 00 00 00; printf "\x01a\x00\x00\xfc\x00\x01"'
seed notify eval 'hdr 12 3f 20 00 00; printf "\x01a\x00\x00\x06\x00\x01"'
# Found by this target: a question name compressed with a pointer into the header (see
# fuzz_targets/dns_query.rs); kept so that every run goes through it.
seed question-pointer-into-header eval 'printf "\x12\x38\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x02\x77\x01\x00\x00"'
seed two-questions eval 'printf "\x12\x40\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x02c1\x00\x00\x01\x00\x01\x03web\x00\x00\x01\x00\x01"'
echo "fuzz-dns.sh: $(ls "$CORPUS" | grep -c '^seed-') seeds, $(ls "$CORPUS" | grep -vc '^seed-' || true) found inputs in $CORPUS" >&2

# --- run -------------------------------------------------------------------------------------
cd "$FUZZ"
export RUSTC_BOOTSTRAP=1
args=(--sanitizer "$SANITIZER")
[ -n "${CARGO_TARGET_DIR:-}" ] && args+=(--target-dir "$CARGO_TARGET_DIR")
jobs=()
[ "$JOBS" -gt 1 ] && jobs=(-jobs="$JOBS" -workers="$JOBS")
echo "fuzz-dns.sh: cargo fuzz run dns_query ${args[*]} for ${DUR}s" >&2
cargo fuzz run dns_query "${args[@]}" -- \
  -max_total_time="$DUR" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${jobs[@]}" "$@"
