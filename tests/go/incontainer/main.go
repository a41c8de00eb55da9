// incontainer is the workload of the container tests (tests/e2e/containers.rs): built static,
// it runs alone in an image FROM scratch. main.goprobeE2EContainer is called exactly -n times
// from -g goroutines, each call sleeping -us microseconds; the tests trace it host-wide, so
// its name must exist in no other program.
package main

import (
	"flag"
	"sync"
	"sync/atomic"
	"time"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2EContainer is the traced function; noinline keeps its own symbol and RETs.
//
//go:noinline
func goprobeE2EContainer(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}

func main() {
	n := flag.Int("n", 2000, "total calls of goprobeE2EContainer")
	g := flag.Int("g", 4, "goroutines sharing the calls")
	us := flag.Int("us", 100, "microseconds each call sleeps")
	harness.Start()
	if *n < 0 || *g < 1 || *us < 0 {
		harness.Fail("need -n >= 0, -g >= 1 and -us >= 0")
	}
	d := time.Duration(*us) * time.Microsecond
	var calls atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < *g; w++ {
		// Goroutine w makes n/g calls, and one more if w < n%g: exactly n in all.
		share := *n / *g
		if w < *n%*g {
			share++
		}
		wg.Add(1)
		go func(share int) {
			defer wg.Done()
			for i := 0; i < share; i++ {
				goprobeE2EContainer(d)
				calls.Add(1)
			}
		}(share)
	}
	wg.Wait()
	if calls.Load() != int64(*n) {
		harness.Fail("made %d calls, want %d", calls.Load(), *n)
	}
	harness.Result(struct {
		Calls int64 `json:"calls"`
	}{calls.Load()})
}
