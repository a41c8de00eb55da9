// hello prints with fmt.Println -n times. The gc compiler inlines fmt.Println into its callers,
// so the binary has no fmt.Println symbol: only inlined copies. Every call is made slow (about
// -delay each) by writing into a socket that a goroutine drains one line per -delay, so probe
// costs are small beside the call. For comparison it also calls the out-of-line fmt.Fprintln (which Println
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

	w := slowWriter(*delay)
	stdout := os.Stdout
	os.Stdout = w
	for i := 0; i < *n; i++ {
		fmt.Println(line)
		fmt.Fprintln(w, line)
	}
	os.Stdout = stdout
	// harness.Result prints this very line with fmt.Println (another inlined copy): one more call.
	harness.Result(struct {
		Println  int `json:"println_calls"`
		Fprintln int `json:"fprintln_direct_calls"`
	}{*n + 1, *n})
}

// slowWriter returns a pipe in packet mode (O_DIRECT) that holds one packet at a time: every
// write of a line waits until a goroutine, reading one line per delay, has taken the previous
// one. (In byte mode a pipe frees room only per 4 KiB page, and a socket only once it is 3/4
// empty: both make the waits bursty.)
func slowWriter(delay time.Duration) *os.File {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_DIRECT|syscall.O_CLOEXEC); err != nil {
		harness.Fail("pipe2: %v", err)
	}
	// One page, so one packet slot.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), 1031 /* F_SETPIPE_SZ */, 4096)
	msg := []byte(line + "\n")
	_, _ = syscall.Write(fds[1], msg) // occupy the slot: from now on every write waits
	go func() {
		buf := make([]byte, 4096)
		for {
			ts := syscall.NsecToTimespec(delay.Nanoseconds())
			_ = syscall.Nanosleep(&ts, nil)
			if n, err := syscall.Read(fds[0], buf); n <= 0 || err != nil {
				return
			}
		}
	}()
	return os.NewFile(uintptr(fds[1]), "slow")
}
