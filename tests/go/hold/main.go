// hold puts many goroutines inside a traced call at the same time, as a server does when a
// backend stalls: -goroutines G goroutines each call goprobeE2EHold, which calls
// goprobeE2EHoldInner, which waits until all G goroutines are inside it; then all return. So G
// calls of each function are open at once, one nested in the other, and each lasts at least as
// long as the last goroutine took to arrive.
package main

import (
	"flag"
	"sync"
	"sync/atomic"
	"time"

	"goprobe.test/progs/internal/harness"
)

var (
	inside  atomic.Int64
	total   int64
	allIn   = make(chan struct{})
	started time.Time
)

//go:noinline
func goprobeE2EHold() int {
	return goprobeE2EHoldInner() + 1
}

//go:noinline
func goprobeE2EHoldInner() int {
	if inside.Add(1) == total {
		close(allIn)
	}
	<-allIn
	return 1
}

func main() {
	goroutines := flag.Int("goroutines", 100000, "goroutines inside the traced calls at once")
	harness.Start()
	total = int64(*goroutines)
	started = time.Now()
	var wg sync.WaitGroup
	var sum atomic.Int64
	for i := 0; i < *goroutines; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sum.Add(int64(goprobeE2EHold()))
		}()
	}
	<-allIn
	allInNs := time.Since(started).Nanoseconds()
	wg.Wait()
	if got := sum.Load(); got != 2*total {
		harness.Fail("sum %d, want %d", got, 2*total)
	}
	harness.Result(struct {
		Calls   int   `json:"calls"`
		AllInNs int64 `json:"all_in_ns"`
	}{*goroutines, allInNs})
}
