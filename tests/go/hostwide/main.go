// hostwide is count under another name: main.goprobeE2EHostwide is called exactly -n times from
// -g goroutines. Tests trace it host-wide (no -p), so its name must exist in no other process.
package main

import (
	"flag"
	"sync"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2EHostwide is the traced function. noinline keeps it a real function with its own symbol
// and RET instructions (the compiler would otherwise inline it into its caller and there would
// be nothing to probe). It calls hostwideMix, so it is not a leaf: the compiler gives it the normal
// stack-check prologue (cmp rsp,[r14+0x10]; jbe morestack) that goprobe places its entry probe on.
//
//go:noinline
func goprobeE2EHostwide(i int) int {
	x := i*7 + 3
	return hostwideMix(x) ^ (x >> 2)
}

// hostwideMix is a small untraced callee; noinline so the call above really happens.
//
//go:noinline
func hostwideMix(x int) int {
	return x*31 + x>>3
}

// hostwideRef is goprobeE2EHostwide computed inline, to check that tracing changed no result.
func hostwideRef(i int) int {
	x := i*7 + 3
	return (x*31 + x>>3) ^ (x >> 2)
}

func main() {
	n := flag.Int("n", 5000, "total calls of goprobeE2EHostwide")
	g := flag.Int("g", 4, "goroutines sharing the calls")
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
	bad := make([]int, *g)   // results that differ from hostwideRef
	var wg sync.WaitGroup
	for w := 0; w < *g; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < share(w); i++ {
				if goprobeE2EHostwide(i) != hostwideRef(i) {
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
