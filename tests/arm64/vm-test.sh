#!/bin/sh
# Runs inside the arm64 test VM (xtask/src/arm64.rs), as root: traces the test programs of
# tests/go, built for arm64, with goprobe built for arm64, and writes one line per case to
# /share/out/KERNEL/results: `PASS name ...` or `FAIL name why`. Each case compares goprobe's
# JSON with the ground truth the program prints, as tests/e2e/funclatency.rs does on amd64.
set -u
K=$1
OUT=/share/out/$K
G=/share/goprobe
R=$OUT/results
: >"$R"
uname -a
ls /sys/kernel/btf/vmlinux

# field NAME FILE: the first top-level number NAME in the last JSON line of FILE.
field() { grep '^{' "$2" | tail -1 | grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }

# start_paused CASE PROGRAM [ARGS...]: start PROGRAM waiting for its go-ahead on fd 3; its PID in $pid.
start_paused() {
    c=$1 prog=$2
    shift 2
    rm -f /tmp/in
    mkfifo /tmp/in
    "$prog" "$@" </tmp/in >"$OUT/$c.truth" 2>"$OUT/$c.prog-err" &
    pid=$!
    exec 3>/tmp/in
}

# release_when BANNER FILE...: once goprobe (PID $gp) printed BANNER to one of FILEs (or after 2
# minutes), give the program its go-ahead, and wait for both to end.
release_when() {
    banner=$1
    shift
    i=0
    while [ $i -lt 1200 ] && ! grep -qs "^$banner" "$@"; do
        sleep 0.1
        i=$((i + 1))
    done
    echo go >&3
    exec 3>&-
    wait "$pid"
    wait "$gp"
}

# run CASE PROGRAM FUNCTION [ARGS...] [-- GOPROBE-ARGS...]: funclatency of FUNCTION over PROGRAM.
run() {
    c=$1 prog=$2 fn=$3
    shift 3
    # Program arguments, then `--` and goprobe's own.
    pargs="" gargs=""
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do pargs="$pargs $1"; shift; done
    [ $# -gt 0 ] && shift
    gargs="$*"
    start_paused "$c" "$prog" $pargs
    $G funclatency --json -v $gargs -p "$pid" "go:$fn" >"$OUT/$c.json" 2>"$OUT/$c.err" &
    gp=$!
    release_when 'Tracing ' "$OUT/$c.json" "$OUT/$c.err"
}

check() { # check CASE WHAT GOT WANT
    if [ -n "$3" ] && [ "$3" = "$4" ]; then echo "PASS $1 $2=$3" >>"$R"; else echo "FAIL $1 $2: goprobe $3, truth $4" >>"$R"; fi
}

for build in /share/go/*/*; do
    b=$(echo "$build" | cut -d/ -f4- | tr / -)
    start=$(date +%s)
    run "$b-count" "$build/count" main.goprobeE2ECount -n 20000 -g 8
    check "$b-count" count "$(field count "$OUT/$b-count.json")" "$(field calls "$OUT/$b-count.truth")"
    check "$b-count" lost "$(field lost "$OUT/$b-count.json")" 0

    run "$b-sleep" "$build/sleep" main.goprobeE2ESleep -n 10 -g 8
    check "$b-sleep" count "$(field count "$OUT/$b-sleep.json")" "$(field calls "$OUT/$b-sleep.truth")"
    p50=$(field p50_ns "$OUT/$b-sleep.json")
    min=$(field min_ns "$OUT/$b-sleep.json")
    if [ -n "$p50" ] && [ "$p50" -ge 5000000 ] && [ "$p50" -le 7000000 ] && [ "$min" -ge 5000000 ]; then
        echo "PASS $b-sleep p50_ns=$p50 min_ns=$min" >>"$R"
    else
        echo "FAIL $b-sleep p50_ns=$p50 min_ns=$min, want p50 in [5 ms, 7 ms] and min >= 5 ms" >>"$R"
    fi

    run "$b-recurse" "$build/recurse" main.goprobeE2ERecurse
    check "$b-recurse" count "$(field count "$OUT/$b-recurse.json")" "$(field calls "$OUT/$b-recurse.truth")"

    run "$b-morestack" "$build/morestack" main.goprobeE2EBigFrame -g 500
    check "$b-morestack" count "$(field count "$OUT/$b-morestack.json")" "$(field calls "$OUT/$b-morestack.truth")"
    ms=$(grep -o 'morestack_skipped[^0-9]*[0-9]*' "$OUT/$b-morestack.err" | grep -o '[0-9]*$' | head -1)
    if [ -n "$ms" ] && [ "$ms" -gt 0 ]; then echo "PASS $b-morestack morestack_skipped=$ms" >>"$R"; else echo "FAIL $b-morestack morestack path not seen (morestack_skipped=$ms)" >>"$R"; fi

    run "$b-panics" "$build/panics" main.goprobeE2EPanicky -n 200
    check "$b-panics" count "$(field count "$OUT/$b-panics.json")" "$(field returned "$OUT/$b-panics.truth")"
    # --stacks: the slow calls are those of the slow caller, the frame right below the function.
    run "$b-stacks" "$build/callers" main.goprobeE2EWork -mode latency -- --stacks --slower-than 2ms
    want=$(($(field slow_calls "$OUT/$b-stacks.truth") + $(field fast_calls "$OUT/$b-stacks.truth")))
    check "$b-stacks" count "$(field count "$OUT/$b-stacks.json")" "$want"
    if grep -q '"frames":\[{"function":"main.goprobeE2ESlowCaller"' "$OUT/$b-stacks.json"; then
        echo "PASS $b-stacks the slow caller named" >>"$R"
    else
        echo "FAIL $b-stacks no stack starting at main.goprobeE2ESlowCaller" >>"$R"
    fi

    # stackcount: each of the three calling stacks with its exact count, walked to the
    # goroutine's start; the third caller reaches the function through an inlined hop.
    start_paused "$b-stackcount" "$build/callers" -mode count
    $G stackcount -v --folded -p "$pid" go:main.goprobeE2ECounted >"$OUT/$b-stackcount.folded" 2>"$OUT/$b-stackcount.err" &
    gp=$!
    release_when 'Tracing ' "$OUT/$b-stackcount.folded" "$OUT/$b-stackcount.err"
    stacks=$(grep -c ';main.goprobeE2ECounted ' "$OUT/$b-stackcount.folded")
    check "$b-stackcount" stacks "$stacks" 3
    for caller in A B C; do
        want=$(grep -o "\"main.goprobeE2ECaller$caller\":[0-9]*" "$OUT/$b-stackcount.truth" | cut -d: -f2)
        tail="main.goprobeE2ECaller$caller;main.goprobeE2ECounted"
        [ "$caller" = C ] && tail="main.goprobeE2ECaller$caller;main.goprobeE2EInlinedHop;main.goprobeE2ECounted"
        line=$(grep "^runtime.goexit;.*$tail " "$OUT/$b-stackcount.folded" | head -1)
        check "$b-stackcount" "caller$caller" "${line##* }" "$want"
    done

    # The seed command's function: fmt.Println has no symbol, only inlined copies.
    run "$b-println" "$build/hello" fmt.Println -n 50 -delay 2ms
    check "$b-println" count "$(field count "$OUT/$b-println.json")" "$(field println_calls "$OUT/$b-println.truth")"

    # profile: samples written as pprof; xtask/src/arm64.rs reads them back with `go tool pprof`.
    start_paused "$b-profile" "$build/cpuhot" -ms 1500
    $G profile -v -p "$pid" -F 999 -o "$OUT/$b-profile.pb.gz" 2>"$OUT/$b-profile.err" &
    gp=$!
    release_when 'Sampling ' "$OUT/$b-profile.err"

    echo "TIME $b $(($(date +%s) - start))s" >>"$R"
done
echo DONE >>"$R"
