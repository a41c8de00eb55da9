// demo is the small "service" the README demo traces: -workers goroutines serve requests in a
// loop. main.handleRequest calls main.lookupUser (sleeps 200 µs to 2 ms) and
// main.renderPage (CPU work: spins about 50 µs). With the default think time that is a few
// hundred requests per second. It runs -d seconds (0: until killed; SIGINT and SIGTERM end it
// cleanly) and then prints one line with the call counts. Unlike the test programs it does not
// wait on stdin: it starts working at once.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var handled, lookups, renders atomic.Int64

// The three traced functions are noinline: the compiler would otherwise inline lookupUser and
// renderPage into handleRequest, and none of them would have a symbol of its own to trace.

//go:noinline
func handleRequest(id int) int {
	handled.Add(1)
	user := lookupUser(id)
	return renderPage(user)
}

//go:noinline
func lookupUser(id int) int {
	lookups.Add(1)
	// Nine lookups in ten hit a "cache" (200-500 µs), one in ten goes to the "database"
	// (1.5-2 ms): two humps in the latency histogram.
	jitter := time.Duration(id*7919%4) * 100 * time.Microsecond
	wait := 200*time.Microsecond + jitter
	if id%10 == 0 {
		wait = 1500*time.Microsecond + jitter*5/3
	}
	// A blocking system call, like real I/O. time.Sleep would do, but on Linux Go rounds short
	// sleeps up to about 1 ms, which would flatten the histogram.
	ts := syscall.NsecToTimespec(wait.Nanoseconds())
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
	return id % 1000
}

//go:noinline
func renderPage(user int) int {
	renders.Add(1)
	h := user
	for start := time.Now(); time.Since(start) < 50*time.Microsecond; {
		for i := 0; i < 100; i++ {
			h = h*31 + i
		}
	}
	return h
}

func main() {
	dur := flag.Float64("d", 8, "run this many seconds (0: until killed)")
	workers := flag.Int("workers", 4, "goroutines serving requests")
	think := flag.Duration("think", 10*time.Millisecond, "pause between two requests of one worker")
	flag.Parse()

	stop := make(chan struct{})
	var once sync.Once
	end := func() { once.Do(func() { close(stop) }) }
	if *dur > 0 {
		time.AfterFunc(time.Duration(*dur*float64(time.Second)), end)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sig; end() }()

	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for id := w; ; id += *workers {
				select {
				case <-stop:
					return
				case <-time.After(*think):
				}
				handleRequest(id)
			}
		}(w)
	}
	wg.Wait()
	fmt.Printf("{\"handleRequest\":%d,\"lookupUser\":%d,\"renderPage\":%d}\n",
		handled.Load(), lookups.Load(), renders.Load())
}
