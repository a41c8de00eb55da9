// Package harness is the protocol every goprobe end-to-end test program follows:
//
//  1. print "ready <pid>" on stdout,
//  2. wait for one line on stdin (the test attaches goprobe first, then writes "go\n");
//     -nowait skips the wait, end of input counts as a line,
//  3. run the workload,
//  4. print ONE JSON line of ground truth on stdout and exit 0; on a failed self-check,
//     print "FAIL: reason" on stderr and exit 1.
//
// The traced functions themselves live in each program's main package, never here, so their
// names (main.goprobeE2E...) are unique on the host.
package harness

import (
	"bufio"
	"io"
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

var noWait = flag.Bool("nowait", false, "do not wait for a line on stdin before the workload")

// linger keeps the process alive after the result line until stdin closes, so a test can read
// goprobe's view of a process that is still running (e.g. that no traced call is left open).
var linger = flag.Bool("linger", false, "after the result line, wait for the end of stdin before exiting")

// Start parses the flags, announces the pid and waits for the go-ahead.
func Start() {
	flag.Parse()
	// os.Stdout is unbuffered in Go: the line is out as soon as Printf returns.
	fmt.Printf("ready %d\n", os.Getpid())
	if *noWait {
		return
	}
	// A line, or the end of input (the test closed our stdin), both mean "go".
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

// Result prints the ground-truth line and exits 0.
func Result(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		Fail("encoding result: %v", err)
	}
	fmt.Println(string(b))
	if *linger {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	os.Exit(0)
}

// Fail reports a failed self-check and exits 1.
func Fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}
