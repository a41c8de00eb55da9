// count calls main.goprobeE2ECount exactly -n times, split across -g goroutines, so a test can
// compare goprobe's call count with the truth.
package main

import (
	"flag"
	"sync"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2ECount is the traced function. noinline keeps it a real function with its own symbol
// and RET instructions (the compiler would otherwise inline it into its caller and there would
// be nothing to probe). It calls countMix, so it is not a leaf: the compiler gives it the normal
// stack-check prologue (cmp rsp,[r14+0x10]; jbe morestack) that goprobe places its entry probe on.
//
//go:noinline
func goprobeE2ECount(i int) int {
	x := i*7 + 3
	return countMix(x) ^ (x >> 2)
}

// countMix is a small untraced callee; noinline so the call above really happens.
//
//go:noinline
func countMix(x int) int {
	return x*31 + x>>3
}

// countRef is goprobeE2ECount computed inline, to check that tracing changed no result.
func countRef(i int) int {
	x := i*7 + 3
	return (x*31 + x>>3) ^ (x >> 2)
}

func main() {
	n := flag.Int("n", 100000, "total calls of goprobeE2ECount")
	g := flag.Int("g", 8, "goroutines sharing the calls")
	harness.Start()
	if *n < 0 || *g < 1 {
		harness.Fail("need -n >= 0 and -g >= 1")
	}

	// Goroutine w makes share(w) calls; the first n%g goroutines take one extra, so the shares
	// add up to exactly n.
	share := func(w int) int {
		if w < *n%*g {
			return *n / *g + 1
		}
		return *n / *g
	}
	calls := make([]int, *g) // counted by the caller, outside the traced function
	bad := make([]int, *g)   // results that differ from countRef
	var wg sync.WaitGroup
	for w := 0; w < *g; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < share(w); i++ {
				if goprobeE2ECount(i) != countRef(i) {
					bad[w]++
				}
				calls[w]++
			}
		}(w)
	}
	wg.Wait()

	total, wrong := 0, 0
	for w := range calls {
		total += calls[w]
		wrong += bad[w]
	}
	if total != *n {
		harness.Fail("made %d calls, want %d", total, *n)
	}
	if wrong != 0 {
		harness.Fail("%d calls returned a wrong result", wrong)
	}
	harness.Result(struct {
		Calls int `json:"calls"`
	}{total})
}
