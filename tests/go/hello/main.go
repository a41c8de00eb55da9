// hello prints with fmt.Println -n times. The gc compiler inlines fmt.Println into its callers,
// so the binary has no fmt.Println symbol: only inlined copies. Every call is made slow (about
// -delay each) by writing into a pipe that a goroutine drains slowly, so probe costs are small
// beside the call. For comparison it also calls the out-of-line fmt.Fprintln (which Println
// wraps) on the same pipe, so a test can compare the inlined copy's latency with Fprintln's.
package main

import (
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"goprobe.test/progs/internal/harness"
)

const line = "hello from goprobe's e2e test" // Println writes it with a newline

func main() {
	n := flag.Int("n", 200, "calls of fmt.Println")
	delay := flag.Duration("delay", 2*time.Millisecond, "how long the drain takes per line")
	harness.Start()

	r, w, err := os.Pipe()
	if err != nil {
		harness.Fail("pipe: %v", err)
	}
	// The smallest pipe (one page), filled up first, so every later write waits for the drain.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), 1031 /* F_SETPIPE_SZ */, 4096)
	go func() {
		buf := make([]byte, len(line)+1)
		for {
			ts := syscall.NsecToTimespec(delay.Nanoseconds())
			_ = syscall.Nanosleep(&ts, nil)
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	stdout := os.Stdout
	os.Stdout = w
	filler := make([]byte, 4096)
	_, _ = w.Write(filler) // blocks until the pipe has room; after this every write waits

	for i := 0; i < *n; i++ {
		fmt.Println(line)
		fmt.Fprintln(w, line)
	}
	os.Stdout = stdout
	harness.Result(struct {
		Println  int `json:"println_calls"`
		Fprintln int `json:"fprintln_direct_calls"`
	}{*n, *n})
}
