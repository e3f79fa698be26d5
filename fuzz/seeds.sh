#!/usr/bin/env bash
# Regenerates the committed seed corpora under fuzz/corpus/ (small valid inputs; libFuzzer
# mutates from them). Needs ffmpeg. Each decode seed is one hint byte (an index into HINTS
# in fuzz_targets/decode.rs) followed by a file; each form seed is one selector byte
# (bit 0: translation, bit 1: a 64-byte file limit) followed by a multipart body whose
# boundary is steno-fuzz-boundary.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
decode=corpus/decode
form=corpus/form
rm -rf "$decode" "$form"
mkdir -p "$decode" "$form"

# 0.3 s: a 440 Hz tone into a sweep, stereo 8 kHz, so the files stay a few KB.
ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi \
    -i "aevalsrc=0.5*sin(440*2*PI*t)|0.3*sin(300*2*PI*t*t):s=8000:d=0.3" "$tmp/src.wav"
seed() { # name hint-index ffmpeg-args...
    local name=$1 hint=$2
    shift 2
    ffmpeg -hide_banner -loglevel error -nostdin -y -i "$tmp/src.wav" "$@" "$tmp/$name"
    { printf "\\x$(printf %02x "$hint")"; cat "$tmp/$name"; } > "$decode/$name"
}
seed s16.wav 1
seed mulaw.wav 1 -c:a pcm_mulaw
seed adpcm.wav 0 -c:a adpcm_ima_wav
seed float.wav 13 -c:a pcm_f32le
seed a.flac 2 -c:a flac
seed a.mp3 3 -c:a libmp3lame -b:a 32k
seed vorbis.ogg 4 -c:a libvorbis -ar 16000
seed a.opus 5 -c:a libopus -b:a 16k
seed a.webm 6 -c:a libopus -b:a 16k
seed flac.mkv 7 -c:a flac
seed aac.m4a 8 -c:a aac -b:a 32k
seed alac.m4a 9 -c:a alac
seed a.aiff 10
seed alac.caf 11 -c:a alac
seed mono.opus 12 -c:a libopus -ac 1 -b:a 12k

part() { # name [filename] value-file
    printf -- '--steno-fuzz-boundary\r\nContent-Disposition: form-data; name="%s"' "$1"
    if [ -n "$2" ]; then printf '; filename="%s"\r\nContent-Type: audio/wav' "$2"; fi
    printf '\r\n\r\n'
    cat "$3"
    printf '\r\n'
}
text() { printf '%s' "$1" > "$tmp/value"; echo "$tmp/value"; }
end() { printf -- '--steno-fuzz-boundary--\r\n'; }
head -c 64 "$tmp/s16.wav" > "$tmp/file"
{ printf '\x00'; part file a.wav "$tmp/file"; part model "" "$(text whisper-1)"; end; } > "$form/minimal"
{
    printf '\x00'
    part file a.wav "$tmp/file"
    for kv in model=whisper-1 language=en "prompt=Ask not." response_format=verbose_json \
        temperature=0.2 "timestamp_granularities[]=word" "timestamp_granularities[]=segment" \
        "include[]=logprobs" stream=false 'chunking_strategy={"type":"server_vad"}' \
        mode=batched sample_rate=16000 user=x; do
        part "${kv%%=*}" "" "$(text "${kv#*=}")"
    done
    end
} > "$form/every-field"
{ printf '\x01'; part model "" "$(text whisper-1)"; part file a.wav "$tmp/file"; part 'timestamp_granularities' "" "$(text '["word","segment"]')"; end; } > "$form/translate-json-list"
{ printf '\x02'; part file a.pcm "$tmp/s16.wav"; part model "" "$(text whisper-1)"; end; } > "$form/over-limit"
du -sh corpus
