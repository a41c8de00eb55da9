// hold puts many goroutines inside a traced call at the same time, as a server does when a
// backend stalls: -goroutines G goroutines each call goprobeE2EHold, which calls
// goprobeE2EHoldInner, which waits until all G goroutines are inside it; then all return. So G
// calls of each function are open at once, one nested in the other.
//
// With -before, the goroutines enter before the program announces itself, and are released by
// the go-ahead: every call began before goprobe attached, so none can be timed, and goprobe must
// say that G returns of each function were unpaired.
package main

import (
	"flag"
	"sync"
	"sync/atomic"

	"goprobe.test/progs/internal/harness"
)

var (
	inside  atomic.Int64
	total   int64
	allIn   = make(chan struct{})
	release = make(chan struct{})
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
	<-release
	return 1
}

func main() {
	goroutines := flag.Int("goroutines", 100000, "goroutines inside the traced calls at once")
	before := flag.Bool("before", false, "enter before the go-ahead, which releases them")
	flag.Parse()
	total = int64(*goroutines)
	var wg sync.WaitGroup
	var sum atomic.Int64
	start := func() {
		for i := 0; i < *goroutines; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sum.Add(int64(goprobeE2EHold()))
			}()
		}
		<-allIn
	}
	if *before {
		start()
		harness.Start()
	} else {
		harness.Start()
		start()
	}
	close(release)
	wg.Wait()
	if got := sum.Load(); got != 2*total {
		harness.Fail("sum %d, want %d", got, 2*total)
	}
	harness.Result(struct {
		Calls  int  `json:"calls"`
		Before bool `json:"began_before_go"`
	}{*goroutines, *before})
}
