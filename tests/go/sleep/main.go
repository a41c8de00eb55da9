// sleep makes goroutines block inside the traced function: -g goroutines each call
// main.goprobeE2ESleep -n times, and each call sleeps -ms milliseconds. While a goroutine sleeps,
// the Go scheduler may resume it on another OS thread; busy goroutines keep every P occupied so
// that it often does. A tracer that keys calls by thread (or uses uretprobes) gets these wrong;
// goprobe must pair every entry with its return and measure about -ms per call.
package main

import (
	"flag"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2ESleep is the traced function; noinline so it keeps its own symbol and RETs.
// It reports whether the goroutine woke up on a different OS thread than it slept on.
//
//go:noinline
func goprobeE2ESleep(d time.Duration) (moved bool) {
	tid := syscall.Gettid()
	time.Sleep(d)
	return syscall.Gettid() != tid
}

func main() {
	n := flag.Int("n", 20, "calls per goroutine")
	g := flag.Int("g", 16, "sleeping goroutines")
	ms := flag.Int("ms", 5, "milliseconds each call sleeps")
	busy := flag.Int("busy", 2, "goroutines spinning on runtime.Gosched during the run")
	harness.Start()
	d := time.Duration(*ms) * time.Millisecond

	// GOMAXPROCS is left at its default. The spinners keep the Ps busy, so a sleeper that wakes
	// up is often picked up by whichever thread is free, not the one it slept on.
	var stop atomic.Bool
	var spinners sync.WaitGroup
	for i := 0; i < *busy; i++ {
		spinners.Add(1)
		go func() {
			defer spinners.Done()
			for i := 0; !stop.Load(); i++ {
				runtime.Gosched()
				if i%64 == 0 {
					// A blocking system call: sysmon hands this P to another thread
					// meanwhile, which shuffles goroutines and threads further.
					ts := syscall.NsecToTimespec(50_000)
					_ = syscall.Nanosleep(&ts, nil)
				}
			}
		}()
	}

	var calls, moved, short atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < *g; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < *n; i++ {
				start := time.Now()
				if goprobeE2ESleep(d) {
					moved.Add(1)
				}
				if time.Since(start) < d {
					short.Add(1)
				}
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	stop.Store(true)
	spinners.Wait()

	if got, want := calls.Load(), int64(*n**g); got != want {
		harness.Fail("made %d calls, want %d", got, want)
	}
	if short.Load() != 0 {
		harness.Fail("%d calls returned before sleeping %v", short.Load(), d)
	}
	// "moved" is informational: how many calls resumed on another thread than they started on.
	harness.Result(struct {
		Calls   int64 `json:"calls"`
		SleepNs int64 `json:"sleep_ns"`
		Moved   int64 `json:"moved"`
	}{calls.Load(), d.Nanoseconds(), moved.Load()})
}
