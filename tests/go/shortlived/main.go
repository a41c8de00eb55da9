// shortlived is a command-line program that lives about 50 ms, like `etcdctl version`: it
// starts, does its start-up work (-startup, a sleep standing for reading a config and dialling a
// server), calls main.goprobeE2EShortlived -n times spread over -spread, prints its ground truth
// and exits. Tests run it many times in a row while goprobe traces host-wide, started before it.
//
// The ground truth carries the wall-clock time (Unix ns) just before each call, so a test can
// tell which calls came after goprobe attached: a call is entered after the time printed for it.
// Run it with -nowait: it is a command that runs to its end, not a service waiting for a test.
package main

import (
	"flag"
	"time"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2EShortlived is the traced function. noinline keeps it a real function with its own
// symbol and RET instructions; calling shortlivedMix keeps it from being a leaf, so it has the
// stack-check prologue that goprobe places its entry probe on.
//
//go:noinline
func goprobeE2EShortlived(i int) int {
	x := i*13 + 5
	return shortlivedMix(x) ^ (x >> 3)
}

// shortlivedMix is a small untraced callee; noinline so the call above really happens.
//
//go:noinline
func shortlivedMix(x int) int {
	return x*29 + x>>2
}

// shortlivedRef is goprobeE2EShortlived computed inline, to check that tracing changed no result.
func shortlivedRef(i int) int {
	x := i*13 + 5
	return (x*29 + x>>2) ^ (x >> 3)
}

func main() {
	n := flag.Int("n", 20, "calls of goprobeE2EShortlived")
	startup := flag.Duration("startup", 30*time.Millisecond, "start-up work before the first call")
	spread := flag.Duration("spread", 20*time.Millisecond, "time the calls are spread over")
	harness.Start()
	if *n < 1 {
		harness.Fail("need -n >= 1")
	}
	time.Sleep(*startup)
	callNs := make([]int64, *n)
	wrong := 0
	for i := 0; i < *n; i++ {
		callNs[i] = time.Now().UnixNano()
		if goprobeE2EShortlived(i) != shortlivedRef(i) {
			wrong++
		}
		time.Sleep(*spread / time.Duration(*n))
	}
	if wrong != 0 {
		harness.Fail("%d calls returned a wrong result", wrong)
	}
	harness.Result(struct {
		Calls  int     `json:"calls"`
		CallNs []int64 `json:"call_unix_ns"`
	}{*n, callNs})
}
