// offcpu has two code paths that wait on a channel: main.goprobeE2EWaitShort for -short
// milliseconds and main.goprobeE2EWaitLong for -long, -n times each, alternately. A helper
// goroutine fills the channel after the asked delay, which it spins through. `goprobe offcpu` must charge the two stacks
// waiting time in the ratio of the waits the program measured (1:4 by default).
package main

import (
	"flag"
	"time"

	"goprobe.test/progs/internal/harness"
)

var (
	requests = make(chan time.Time, 1)
	replies  = make(chan struct{})
)

// wait asks the helper for a reply after d and waits for it on the channel.
func wait(d time.Duration) time.Duration {
	t := time.Now()
	requests <- t.Add(d)
	<-replies
	return time.Since(t)
}

//go:noinline
func goprobeE2EWaitShort(d time.Duration) time.Duration { return wait(d) }

//go:noinline
func goprobeE2EWaitLong(d time.Duration) time.Duration { return wait(d) }

func main() {
	n := flag.Int("n", 150, "waits on each path")
	shortMs := flag.Int("short", 1, "milliseconds of the short wait")
	longMs := flag.Int("long", 4, "milliseconds of the long wait")
	harness.Start()
	// The helper spins until the deadline the waiter set: a timer would overshoot a 1 ms sleep
	// by up to 0.7 ms on Go 1.19, and the helper's own wake-up would add to each wait; either
	// would bend the 1:4.
	go func() {
		for deadline := range requests {
			for time.Now().Before(deadline) {
			}
			replies <- struct{}{}
		}
	}()
	var short, long time.Duration
	for i := 0; i < *n; i++ {
		short += goprobeE2EWaitShort(time.Duration(*shortMs) * time.Millisecond)
		long += goprobeE2EWaitLong(time.Duration(*longMs) * time.Millisecond)
	}
	harness.Result(struct {
		Waits   int   `json:"waits"`
		ShortNs int64 `json:"short_ns"`
		LongNs  int64 `json:"long_ns"`
	}{*n, short.Nanoseconds(), long.Nanoseconds()})
}
